//! A real NocoBase for the opt-in tests of the email manager's settings: the URL and API
//! key come from `scripts/real-nocobase.sh` (`source "$(bash scripts/real-nocobase.sh env)"`:
//! `NOCOBASE_E2E_URL`, `NOCOBASE_E2E_API_KEY`). A stand-in for the email manager's
//! `mailSettings` collection is created through NocoBase's own collection API
//! (`collections:create` with its fields), under a name of the test's own, and destroyed
//! at the end.
#![allow(dead_code)]

use serde_json::{Value, json};

pub struct RealNocoBase {
    pub url: String,
    pub key: String,
    http: reqwest::Client,
}

impl RealNocoBase {
    /// From the environment; panics with the way to get one (the tests using it are
    /// `#[ignore]`d, so they run only when asked for).
    pub fn from_env() -> Self {
        let get = |n: &str| {
            std::env::var(n).unwrap_or_else(|_| {
                panic!(
                    "{n} is not set: start a real NocoBase with `bash scripts/real-nocobase.sh start` and `source \"$(bash scripts/real-nocobase.sh env)\"`"
                )
            })
        };
        Self {
            url: get("NOCOBASE_E2E_URL").trim_end_matches('/').to_owned(),
            key: get("NOCOBASE_E2E_API_KEY"),
            http: reqwest::Client::new(),
        }
    }

    /// Sends one API request, retrying while NocoBase refreshes (503), and returns the
    /// status and JSON body.
    pub async fn api(&self, method: &str, action: &str, body: Option<Value>) -> (u16, Value) {
        for _ in 0..60 {
            let url = format!("{}/api/{action}", self.url);
            let mut req = self
                .http
                .request(method.parse().unwrap(), &url)
                .bearer_auth(&self.key);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("NocoBase answers");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            if status == 503 {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        panic!("NocoBase kept answering 503 for 30 s");
    }

    /// A stand-in for the email manager's settings: a record per provider (gmail,
    /// outlook), a client ID field and a client secret field (`hidden: true` when asked,
    /// as a secret may be: then it is absent from every read).
    pub async fn create_stand_in(&self, name: &str, secret_hidden: bool) {
        self.destroy(name).await;
        let (status, body) = self
            .api(
                "POST",
                "collections:create",
                Some(json!({
                    "name": name, "title": name, "autoGenId": true, "createdAt": true, "updatedAt": true,
                    "fields": [
                        {"name": "id", "type": "bigInt", "autoIncrement": true, "primaryKey": true, "allowNull": false, "interface": "id"},
                        {"name": "createdAt", "type": "date", "field": "createdAt", "interface": "createdAt"},
                        {"name": "updatedAt", "type": "date", "field": "updatedAt", "interface": "updatedAt"},
                        {"name": "provider", "type": "string", "interface": "input"},
                        {"name": "clientId", "type": "string", "interface": "input"},
                        {"name": "clientSecret", "type": "string", "interface": "password", "hidden": secret_hidden},
                    ],
                })),
            )
            .await;
        assert_eq!(status, 200, "collections:create: {body}");
        for provider in ["gmail", "outlook"] {
            let (status, body) = self
                .api(
                    "POST",
                    &format!("{name}:create"),
                    Some(json!({"provider": provider, "clientId": "", "clientSecret": ""})),
                )
                .await;
            assert_eq!(status, 200, "{name}:create: {body}");
        }
    }

    pub async fn destroy(&self, name: &str) {
        self.api(
            "POST",
            &format!("collections:destroy?filterByTk={name}"),
            None,
        )
        .await;
    }

    /// The record of `provider`, as NocoBase lists it.
    pub async fn record(&self, name: &str, provider: &str) -> Value {
        let (status, body) = self
            .api(
                "GET",
                &format!(
                    "{name}:list?paginate=false&filter=%7B%22provider%22%3A%22{provider}%22%7D"
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"][0].clone()
    }

    /// Asks NocoBase to restart its application in-process (503 for a few seconds).
    pub async fn refresh(&self) {
        let resp = self
            .http
            .post(format!("{}/api/app:refresh", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("NocoBase answers");
        assert!(resp.status().is_success(), "app:refresh: {}", resp.status());
    }
}
