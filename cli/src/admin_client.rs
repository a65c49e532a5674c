//! A small client for the admin API, used by the demo.

use reqwest::StatusCode;
use serde_json::Value;

/// An admin API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{method} {path} failed")]
    Request {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: StatusCode,
        body: String,
    },
}

/// Talks to `/api/v1` with a bearer token.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Self {
        AdminClient {
            base: format!("{}/api/v1", base.trim_end_matches('/')),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PATCH" => self.http.patch(&url),
            _ => self.http.put(&url),
        };
        let mut request = request.bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = |source| AdminError::Request {
            method,
            path: path.to_string(),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        if !status.is_success() {
            return Err(AdminError::Status {
                method,
                path: path.to_string(),
                status,
                body: text,
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        self.send("POST", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        self.send("PATCH", path, Some(body)).await
    }

    /// Fetches every item of a paginated list.
    pub async fn all(&self, path: &str) -> Result<Vec<Value>, AdminError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let separator = if path.contains('?') { '&' } else { '?' };
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{separator}limit=1000&cursor={c}"),
                None => format!("{path}{separator}limit=1000"),
            };
            let page = self.get(&page_path).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(items),
            }
        }
    }
}
