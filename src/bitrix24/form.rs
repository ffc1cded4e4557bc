//! `application/x-www-form-urlencoded` bodies with PHP bracket keys, as
//! Bitrix24 (PHP `http_build_query`) sends them:
//! `data%5BdocumentUid%5D=R-1&auth%5Bmember_id%5D=...`.
//!
//! Each key is percent-decoded first, then split on brackets. Decoding is
//! strict about UTF-8 (lossy decoding would let two different bodies mean
//! the same event), and ambiguous bodies (a key sent twice, or used both as
//! a value and as a parent) are rejected rather than resolved silently: a
//! real portal never sends them, and an ingress that picks one reading is an
//! ingress a crafted request can fool.

use std::borrow::Cow;

use super::tree::{root_tree, Branch, EventTree, Node, ParseError, MAX_DEPTH};

pub fn parse_form(body: &[u8]) -> Result<EventTree, ParseError> {
    let mut root = Branch::default();
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let key = decode(raw_key)?;
        let value = decode(raw_value)?;
        let Some(path) = split_key(&key) else {
            // PHP drops pairs without a name (`=x`, `[a]=x`).
            continue;
        };
        if path.len() > MAX_DEPTH {
            return Err(ParseError::TooDeep(key.chars().take(64).collect()));
        }
        insert(&mut root, &key, &path, value)?;
    }
    Ok(root_tree(root))
}

fn decode(raw: &[u8]) -> Result<String, ParseError> {
    if !raw.iter().any(|b| *b == b'+' || *b == b'%') {
        // Nothing to decode (most values): one allocation, not two.
        return std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ParseError::InvalidUtf8);
    }
    // One pass: `+` is a space, `%XX` a byte; a `%` not followed by two hex
    // digits stays as it is (what PHP's urldecode does).
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => match (raw.get(i + 1).and_then(hex), raw.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    bytes.push(hi << 4 | lo);
                    i += 2;
                }
                _ => bytes.push(b'%'),
            },
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| ParseError::InvalidUtf8)
}

fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|d| d as u8)
}

/// A path segment: a named key, or `[]` (append to a list).
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Name(&'a str),
    Append,
}

/// `a[b][0][]` → [a, b, 0, Append]. Like PHP, the part before the first `[`
/// is the name, bracket groups follow, and anything after an unclosed `[`
/// is ignored. `None` when the name is empty.
fn split_key(key: &str) -> Option<Vec<Segment<'_>>> {
    let (name, mut rest) = match key.find('[') {
        Some(0) => return None,
        Some(i) if key[i..].contains(']') => (&key[..i], &key[i..]),
        _ => (key, ""),
    };
    if name.is_empty() {
        return None;
    }
    let mut path = vec![Segment::Name(name)];
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            break;
        };
        let inner = &stripped[..close];
        path.push(if inner.is_empty() {
            Segment::Append
        } else {
            Segment::Name(inner)
        });
        rest = &stripped[close + 1..];
    }
    Some(path)
}

fn insert(
    root: &mut Branch,
    key: &str,
    path: &[Segment<'_>],
    value: String,
) -> Result<(), ParseError> {
    let shown = || key.chars().take(64).collect::<String>();
    let mut branch = root;
    for (i, segment) in path.iter().enumerate() {
        let name = match segment {
            Segment::Name(n) => Cow::Borrowed(*n),
            // `a[]=x`: one past the largest integer key, like PHP.
            Segment::Append => Cow::Owned(
                branch
                    .next_index()
                    .ok_or_else(|| ParseError::ConflictingShape(shown()))?,
            ),
        };
        if i + 1 == path.len() {
            return match branch.get(&name) {
                None => {
                    branch.insert(name.into_owned(), Node::Leaf(value));
                    Ok(())
                }
                Some(Node::Leaf(_)) => Err(ParseError::DuplicateKey(shown())),
                Some(Node::Branch(_)) => Err(ParseError::ConflictingShape(shown())),
            };
        }
        branch = match branch.child_or_branch(name) {
            Node::Branch(children) => children,
            Node::Leaf(_) => return Err(ParseError::ConflictingShape(shown())),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitrix24::tree::parse_json;
    use serde_json::{json, Value};

    fn tree(body: &str) -> Value {
        Value::Object(parse_form(body.as_bytes()).unwrap().root().clone())
    }

    const SIGNING: &str = "event=ONSIGNB2EDOCUMENTSTATUSCHANGED&event_handler_id=1213\
        &data%5BdocumentUid%5D=R-LK-50JI-3AAK-WS1A&data%5BcompanyUid%5D=C-0001\
        &data%5BstatusCode%5D=signing&data%5BstatusName%5D=Signing+in+progress\
        &ts=1770374899&auth%5Bdomain%5D=example.bitrix24.com\
        &auth%5Bclient_endpoint%5D=https%3A%2F%2Fexample.bitrix24.com%2Frest%2F\
        &auth%5Bmember_id%5D=0123456789abcdef0123456789abcdef&auth%5Bapplication_token%5D=tok";

    #[test]
    fn real_signing_body_with_encoded_brackets() {
        let t = tree(SIGNING);
        assert_eq!(t["event"], "ONSIGNB2EDOCUMENTSTATUSCHANGED");
        assert_eq!(t["event_handler_id"], "1213");
        assert_eq!(t["data"]["documentUid"], "R-LK-50JI-3AAK-WS1A");
        assert_eq!(t["data"]["statusName"], "Signing in progress");
        assert_eq!(
            t["auth"]["client_endpoint"],
            "https://example.bitrix24.com/rest/"
        );
        assert_eq!(t["ts"], "1770374899");
    }

    #[test]
    fn raw_and_encoded_brackets_are_the_same_tree() {
        let raw = SIGNING.replace("%5B", "[").replace("%5D", "]");
        assert_eq!(tree(&raw), tree(SIGNING));
    }

    #[test]
    fn plus_is_space_and_encoded_plus_is_plus() {
        let t = tree("a=x+y%2Bz&b%5Bc+d%5D=1");
        assert_eq!(t["a"], "x y+z");
        assert_eq!(t["b"]["c d"], "1");
    }

    #[test]
    fn stray_percent_signs_stay_literal() {
        let t = tree("a=100%&b=%2&c=%zz&d=%+0&e=%41%4a%4A");
        assert_eq!(t["a"], "100%");
        assert_eq!(t["b"], "%2");
        assert_eq!(t["c"], "%zz");
        assert_eq!(t["d"], "% 0");
        assert_eq!(t["e"], "AJJ");
    }

    #[test]
    fn cyrillic_utf8() {
        let encoded: String = "Подписание".bytes().map(|b| format!("%{b:02X}")).collect();
        let t = tree(&format!("data%5BstatusName%5D={encoded}"));
        assert_eq!(t["data"]["statusName"], "Подписание");
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert_eq!(
            parse_form(b"a=%FF%FE").unwrap_err(),
            ParseError::InvalidUtf8
        );
    }

    #[test]
    fn lists_only_for_keys_zero_to_n_minus_one() {
        let t = tree("d[UF][0]=1&d[UF][1]=2&d[BOT][15010][x]=y&d[G][1]=a&d[H][0]=a&d[H][01]=b");
        assert_eq!(t["d"]["UF"], json!(["1", "2"]));
        assert_eq!(t["d"]["BOT"], json!({"15010": {"x": "y"}}));
        assert_eq!(t["d"]["G"], json!({"1": "a"}));
        assert_eq!(t["d"]["H"], json!({"0": "a", "01": "b"}));
    }

    #[test]
    fn list_order_follows_indices_not_arrival() {
        let t = tree("l[2]=c&l[0]=a&l[1]=b&l[10]=k&m[1]=b&m[0]=a");
        assert_eq!(t["l"], json!({"0": "a", "1": "b", "10": "k", "2": "c"}));
        assert_eq!(t["m"], json!(["a", "b"]));
    }

    #[test]
    fn append_brackets() {
        let t = tree("l[]=a&l[]=b");
        assert_eq!(t["l"], json!(["a", "b"]));
        let t = tree("m[5]=a&m[]=b&m[x]=c&m[]=d");
        assert_eq!(t["m"], json!({"5": "a", "6": "b", "x": "c", "7": "d"}));
        // "+1" and "01" are not integer keys for PHP: they don't move the index.
        let t = tree("n[01]=a&n[%2B1]=b&n[]=c");
        assert_eq!(t["n"], json!({"01": "a", "+1": "b", "0": "c"}));
    }

    #[test]
    fn appends_at_the_integer_limit_are_rejected_not_wrapped() {
        let body = format!("a[{}]=x&a[]=y", usize::MAX);
        assert!(matches!(
            parse_form(body.as_bytes()).unwrap_err(),
            ParseError::ConflictingShape(_)
        ));
    }

    #[test]
    fn many_appends_stay_linear() {
        // 13k appends: quadratic work here would take seconds.
        let body = "a[]=&".repeat(13_000);
        let started = std::time::Instant::now();
        let t = tree(&body);
        assert_eq!(t["a"].as_array().unwrap().len(), 13_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert_eq!(
            parse_form(b"auth[application_token]=a&auth%5Bapplication_token%5D=b").unwrap_err(),
            ParseError::DuplicateKey("auth[application_token]".into())
        );
    }

    #[test]
    fn conflicting_shapes_are_rejected_in_both_orders() {
        assert!(matches!(
            parse_form(b"a=1&a[b]=2").unwrap_err(),
            ParseError::ConflictingShape(_)
        ));
        assert!(matches!(
            parse_form(b"a[b]=2&a=1").unwrap_err(),
            ParseError::ConflictingShape(_)
        ));
    }

    #[test]
    fn nameless_pairs_and_empty_pieces_are_ignored() {
        let t = tree("&&=x&[a]=1&b=2&c");
        assert_eq!(t, json!({"b": "2", "c": ""}));
    }

    #[test]
    fn unclosed_bracket_keeps_the_name() {
        let t = tree("a[b=1");
        assert_eq!(t, json!({"a[b": "1"}));
    }

    #[test]
    fn depth_is_bounded() {
        let key = format!("a{}", "[x]".repeat(MAX_DEPTH));
        assert!(matches!(
            parse_form(format!("{key}=1").as_bytes()).unwrap_err(),
            ParseError::TooDeep(_)
        ));
    }

    #[test]
    fn json_body_is_the_same_tree_as_the_form_body() {
        let json_body = json!({
            "event": "ONSIGNB2EDOCUMENTSTATUSCHANGED",
            "event_handler_id": 1213,
            "data": {"documentUid": "R-LK-50JI-3AAK-WS1A", "companyUid": "C-0001",
                     "statusCode": "signing", "statusName": "Signing in progress"},
            "ts": 1770374899,
            "auth": {"domain": "example.bitrix24.com",
                     "client_endpoint": "https://example.bitrix24.com/rest/",
                     "member_id": "0123456789abcdef0123456789abcdef",
                     "application_token": "tok", "refresh_token": null}
        });
        let from_json = parse_json(json_body.to_string().as_bytes()).unwrap();
        assert_eq!(from_json, parse_form(SIGNING.as_bytes()).unwrap());
    }

    #[test]
    fn json_scalars_become_php_strings() {
        let t = parse_json(
            br#"{"a":true,"b":false,"c":null,"d":[],"e":[1,null,"x"],"f":{"0":"a","1":"b"}}"#,
        )
        .unwrap();
        assert_eq!(
            Value::Object(t.root().clone()),
            json!({"a": "1", "b": "0", "e": {"0": "1", "2": "x"}, "f": ["a", "b"]})
        );
    }

    #[test]
    fn json_duplicate_keys_are_rejected_like_form_ones() {
        let err = parse_json(br#"{"auth":{"application_token":"a","application_token":"b"}}"#)
            .unwrap_err();
        assert!(matches!(err, ParseError::InvalidJson(m) if m.contains("more than once")));
    }

    #[test]
    fn json_depth_is_bounded() {
        let body = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20));
        assert!(matches!(
            parse_json(body.as_bytes()).unwrap_err(),
            ParseError::TooDeep(_)
        ));
    }

    #[test]
    fn json_must_be_an_object() {
        assert_eq!(parse_json(b"[1]").unwrap_err(), ParseError::NotAnObject);
        assert!(matches!(
            parse_json(b"{").unwrap_err(),
            ParseError::InvalidJson(_)
        ));
    }
}
