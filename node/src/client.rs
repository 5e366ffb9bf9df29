//! The small HTTP client of the admin commands (`xpod pods …`, `xpod keys …`): the API's own
//! types in and out ([`crate::api_types`], the ones the handlers use), the key in
//! `Authorization: Bearer`. Plain `http://` for now.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// An answer read as the API type `T`, with its JSON as the server sent it (for `--json`).
pub struct Answer<T> {
    pub json: Value,
    pub body: T,
}

pub struct ApiClient {
    server: String,
    key: Option<String>,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    pub fn new(server: &str, key: Option<String>) -> anyhow::Result<ApiClient> {
        let server = server.trim_end_matches('/').to_string();
        if !server.starts_with("http://") {
            bail!("--server `{server}`: expected http://HOST:PORT (https is not supported by the CLI yet)");
        }
        let http = Client::builder(TokioExecutor::new()).build_http();
        Ok(ApiClient { server, key, http })
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty). A JSON error
    /// body from the server becomes an error naming its message.
    /// Sends a request and returns the response as it arrives (for streamed answers); a
    /// non-2xx answer becomes an error with the server's message.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let url = format!("{}{path}", self.server);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(k) = &self.key {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let resp = self
            .http
            .request(req.body(Full::new(bytes))?)
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let msg = value
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!(
            "{} {}: {msg}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.server);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(k) = &self.key {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let resp = self
            .http
            .request(req.body(Full::new(bytes))?)
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            let msg = value
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!(
                "{} {}: {msg}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
        }
        Ok((status, value))
    }

    /// Sends `body` (a request type of the API, or none) and reads the answer as `T`; an
    /// answer that is not a `T` (a server of another version) is an error that says so.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<Answer<T>> {
        let what = format!("{method} {path}");
        let (_, json) = self.call(method, path, body).await?;
        let body = serde_json::from_value(json.clone()).with_context(|| {
            format!(
                "the answer to {what} is not the {} this xpod expects (a server of another version?)",
                std::any::type_name::<T>().rsplit("::").next().unwrap_or("type")
            )
        })?;
        Ok(Answer { json, body })
    }

    /// [`Self::send`] without a body.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        self.send(Method::GET, path, None::<&()>).await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::api_types::cluster::PodList;

    /// A server that answers every request with `body` (200, JSON).
    async fn answering(body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_answer_is_read_as_the_api_type_or_refused_naming_it() {
        let ok = answering(r#"{"pods": []}"#).await;
        let a: Answer<PodList> = ApiClient::new(&ok, None)
            .unwrap()
            .get("/.cluster/pods")
            .await
            .unwrap();
        assert!(a.body.pods.is_empty());
        assert_eq!(a.json, serde_json::json!({"pods": []}));

        let other = answering(r#"{"pods": 5}"#).await;
        let e = ApiClient::new(&other, None)
            .unwrap()
            .get::<PodList>("/.cluster/pods")
            .await
            .err()
            .expect("a PodList of another shape is refused");
        let e = format!("{e:#}");
        assert!(
            e.contains("the answer to GET /.cluster/pods is not the PodList this xpod expects"),
            "{e}"
        );
    }
}
