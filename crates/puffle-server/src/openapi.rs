pub const DOCUMENT: &str = "{}";
