//! A real NocoBase for the tests that need one: the URL and API key come from
//! `scripts/real-nocobase.sh` (`source "$(bash scripts/real-nocobase.sh env)"`:
//! `NOCOBASE_E2E_URL`, `NOCOBASE_E2E_API_KEY`), which `scripts/test.sh` starts. A stand-in for the email manager's
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
    /// The NocoBase `scripts/real-nocobase.sh` started (`NOCOBASE_E2E_URL`,
    /// `NOCOBASE_E2E_API_KEY`), or `None` (the test skips, saying so) outside the test
    /// command. In the test command (`NOCOBASE_REAL_REQUIRED=1`) or under CI a missing
    /// NocoBase fails the test instead: the suite never passes without it.
    pub fn from_env_or_skip() -> Option<Self> {
        let required = std::env::var("NOCOBASE_REAL_REQUIRED").is_ok_and(|v| v == "1")
            || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        match (var("NOCOBASE_E2E_URL"), var("NOCOBASE_E2E_API_KEY")) {
            (Some(url), Some(key)) => Some(Self {
                url: url.trim_end_matches('/').to_owned(),
                key,
                http: reqwest::Client::new(),
            }),
            _ if required => panic!(
                "no real NocoBase: NOCOBASE_E2E_URL and NOCOBASE_E2E_API_KEY are not set. \
                 `bash scripts/test.sh` starts one; by hand: `bash scripts/real-nocobase.sh start` \
                 then `source \"$(bash scripts/real-nocobase.sh env)\"`"
            ),
            _ => {
                // Straight to stderr: the test harness hides eprintln! of passing tests.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: no real NocoBase (NOCOBASE_E2E_URL, NOCOBASE_E2E_API_KEY unset); \
                     `bash scripts/test.sh` runs this test against one it starts"
                );
                None
            }
        }
    }

    /// Sends one API request, retrying while NocoBase refreshes (503) or its connection
    /// drops, and returns the status and JSON body. A dropped connection is retried
    /// because a reload (`app:refresh`, or another suite stopping and starting the shared
    /// NocoBase) closes idle keep-alive connections: the next request on one failed with
    /// hyper's `IncompleteMessage` before NocoBase saw it.
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
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if e.is_request() || e.is_connect() => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => panic!("NocoBase answers: {e}"),
            };
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            if status == 503 {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        panic!("NocoBase kept answering 503 or dropping the connection for 30 s");
    }

    /// A stand-in for the email manager's settings: a record per provider (gmail,
    /// outlook), a client ID field and a client secret field (`hidden: true` when asked,
    /// as a secret may be: then it is absent from every read).
    pub async fn create_stand_in(&self, name: &str, secret_hidden: bool) {
        self.create_collection(json!({
            "name": name, "title": name, "autoGenId": true, "createdAt": true, "updatedAt": true,
            "fields": [
                {"name": "id", "type": "bigInt", "autoIncrement": true, "primaryKey": true, "allowNull": false, "interface": "id"},
                {"name": "createdAt", "type": "date", "field": "createdAt", "interface": "createdAt"},
                {"name": "updatedAt", "type": "date", "field": "updatedAt", "interface": "updatedAt"},
                {"name": "provider", "type": "string", "interface": "input"},
                {"name": "clientId", "type": "string", "interface": "input"},
                {"name": "clientSecret", "type": "string", "interface": "password", "hidden": secret_hidden},
            ],
        }))
        .await;
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

    /// A stand-in with a JSON `options` field (hidden from reads when asked), with or
    /// without `updatedAt`, holding one record with `options`; returns the record's id.
    pub async fn create_options_stand_in(
        &self,
        name: &str,
        updated_at: bool,
        options_hidden: bool,
        options: Value,
    ) -> Value {
        let mut fields = vec![
            json!({"name": "id", "type": "bigInt", "autoIncrement": true, "primaryKey": true, "allowNull": false, "interface": "id"}),
            json!({"name": "options", "type": "json", "interface": "json", "hidden": options_hidden}),
        ];
        if updated_at {
            fields.push(json!({"name": "updatedAt", "type": "date", "field": "updatedAt", "interface": "updatedAt"}));
        }
        self.create_collection(json!({"name": name, "title": name, "autoGenId": true,
            "createdAt": false, "updatedAt": updated_at, "timestamps": updated_at,
            "fields": fields}))
            .await;
        let (status, body) = self
            .api(
                "POST",
                &format!("{name}:create"),
                Some(json!({"options": options})),
            )
            .await;
        assert_eq!(status, 200, "{name}:create: {body}");
        body["data"]["id"].clone()
    }

    /// `collections:create` of `definition`, after destroying any collection of its name.
    /// A 500 is tried again: with other suites using the same NocoBase (and making it
    /// reload with `app:refresh`), a create failed twice in a row with 500 "null value in
    /// column \"key\" of relation \"fields\"" on 2.2.15, and the same request succeeded
    /// when sent again a little later.
    async fn create_collection(&self, definition: Value) {
        let name = definition["name"].as_str().expect("a name").to_owned();
        for attempt in 1..=5 {
            self.destroy(&name).await;
            let (status, body) = self
                .api("POST", "collections:create", Some(definition.clone()))
                .await;
            if status == 200 {
                return;
            }
            assert!(
                status == 500 && attempt < 5,
                "collections:create: {status} {body}"
            );
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    /// The only record of `name`, as NocoBase lists it.
    pub async fn only_record(&self, name: &str) -> Value {
        let (status, body) = self
            .api("GET", &format!("{name}:list?paginate=false"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"][0].clone()
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
