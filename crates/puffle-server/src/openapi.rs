//! The OpenAPI 3.1 document served at `/api/openapi.json`, written by hand beside the handlers
//! it describes. The end-to-end suite checks it against the routes the server answers.

pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            let ops = item.as_object().expect("path item");
            assert!(
                ops.values().any(|op| op["responses"]["200"].is_object()),
                "{path} documents no successful answer"
            );
            // Every URL passes the `%00` check (routes::reject_nul_in_url), so every operation
            // can answer 400.
            for (method, op) in ops.iter().filter(|(key, _)| *key != "parameters") {
                assert!(
                    op["responses"]["400"].is_object(),
                    "{method} {path} does not document its 400"
                );
            }
        }
        assert!(paths.contains_key("/api/leads") && paths.contains_key("/api/lists/{id}/leads"));
    }
}
