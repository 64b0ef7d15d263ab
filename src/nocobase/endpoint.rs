//! Where NocoBase is: the API root derived from the configured URL, the address shown in
//! messages, and the checks of the API key and application name before they become
//! headers. Pure.

use secrecy::{ExposeSecret, SecretString};

/// Where a request went, for messages.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    /// NocoBase's root URL as configured.
    pub base: &'a str,
    /// The application selected with `X-App`, if any.
    pub app: Option<&'a str>,
}

/// `{base}/api/` from NocoBase's root URL (a trailing `/api` accepted), and the base as
/// shown in messages; or why the URL is refused.
pub fn api_url(base_url: &str) -> Result<(url::Url, String), String> {
    let mut url = url::Url::parse(base_url.trim())
        .map_err(|e| format!("the NocoBase URL is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the NocoBase URL must start with http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the NocoBase URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
                "the NocoBase URL must not contain a user name or password; the API key goes in its Secret"
                    .into(),
            );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the NocoBase URL must not have a query (?...) or fragment (#...)".into());
    }
    let shown = url.as_str().trim_end_matches('/').to_owned();
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| "the NocoBase URL cannot be a base".to_owned())?;
        segs.pop_if_empty();
    }
    if url.path_segments().and_then(|mut s| s.next_back()) != Some("api") {
        url.path_segments_mut()
            .map_err(|()| "the NocoBase URL cannot be a base".to_owned())?
            .push("api");
    }
    // A trailing empty segment makes the path end with `/`.
    url.path_segments_mut()
        .map_err(|()| "the NocoBase URL cannot be a base".to_owned())?
        .push("");

    Ok((url, shown))
}

/// The API key as sent (trimmed), or why it cannot be a bearer token. The message never
/// quotes the key.
pub fn api_key_header(api_key: &SecretString) -> Result<SecretString, String> {
    let key = api_key.expose_secret().trim();
    if key.is_empty() {
        return Err("the NocoBase API key is empty".into());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "the NocoBase API key contains whitespace or control characters inside it; copy it again"
                .into(),
        );
    }
    Ok(SecretString::from(key.to_owned()))
}

/// The application name sent as `X-App` (trimmed; empty means the main application), or
/// why it cannot be a header value.
pub fn app_header(app: Option<String>) -> Result<Option<String>, String> {
    let app = app.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
    if let Some(a) = &app
        && !a.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(format!(
            "the NocoBase application name {a:?} is not usable in the X-App header (printable ASCII without spaces only)"
        ));
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nocobase::{NocoBaseClient, NocoBaseOptions};

    fn client(url: &str) -> Result<NocoBaseClient, String> {
        NocoBaseClient::new(
            url,
            SecretString::from("key"),
            None,
            NocoBaseOptions::default(),
        )
    }

    #[test]
    fn api_base_is_derived_from_the_root_url() {
        for (given, api) in [
            ("http://nocobase:13000", "http://nocobase:13000/api/"),
            ("http://nocobase:13000/", "http://nocobase:13000/api/"),
            ("http://nocobase:13000/api", "http://nocobase:13000/api/"),
            ("http://nocobase:13000/api/", "http://nocobase:13000/api/"),
            ("https://example.com/nb", "https://example.com/nb/api/"),
        ] {
            assert_eq!(api_url(given).unwrap().0.as_str(), api, "{given}");
        }
    }

    #[test]
    fn bad_urls_and_keys_are_refused() {
        for bad in [
            "nocobase:13000",
            "ftp://nocobase",
            "http://user:pw@nocobase",
            "http://nocobase/?x=1",
            "not a url",
        ] {
            assert!(client(bad).is_err(), "{bad}");
        }
        let empty = NocoBaseClient::new(
            "http://nocobase",
            SecretString::from(" \n"),
            None,
            NocoBaseOptions::default(),
        );
        assert!(empty.unwrap_err().contains("empty"));
        let inner = NocoBaseClient::new(
            "http://nocobase",
            SecretString::from("ab cd"),
            None,
            NocoBaseOptions::default(),
        );
        assert!(!inner.unwrap_err().contains("ab cd"));
    }
}
