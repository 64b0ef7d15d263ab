//! Property tests: the error-body parser and classifier never panic, whatever Microsoft
//! (or a proxy in between) sends, and never call a server error a rejection.

use std::time::{Duration, UNIX_EPOCH};

use nocobase_mail_operator::microsoft::Outcome;
use nocobase_mail_operator::microsoft::classify::{
    classify_failure, parse_error_body, parse_retry_after,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..512), guid in any::<bool>()) {
        let _ = parse_error_body(&body);
        let v = classify_failure(status, None, &body, guid);
        prop_assert!(!v.message.is_empty());
        if status >= 500 || status == 429 {
            prop_assert_eq!(v.outcome, Outcome::Unavailable);
        }
    }

    #[test]
    fn json_shaped_bodies_never_panic(status in 400u16..600, code in any::<i64>(), err in "[a-z_]{0,20}", desc in ".{0,200}") {
        let body = serde_json::json!({"error": err, "error_description": desc, "error_codes": [code], "trace_id": "t", "correlation_id": "c"});
        let v = classify_failure(status, Some(Duration::from_secs(1)), body.to_string().as_bytes(), false);
        prop_assert!(v.outcome == Outcome::Rejected || v.outcome == Outcome::Unavailable);
        if v.outcome == Outcome::Rejected {
            prop_assert!(status < 500);
            prop_assert_eq!(v.aadsts_code, Some(code));
        }
    }

    #[test]
    fn retry_after_never_panics_and_is_at_most_an_hour(s in prop_oneof![".{0,64}", any::<u64>().prop_map(|n| n.to_string())]) {
        let d = parse_retry_after(&s, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        prop_assert!(d.is_none_or(|d| d <= Duration::from_secs(3600)));
    }
}
