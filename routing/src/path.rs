//! Request paths → decoded resource paths, strictly.
//!
//! A resource path inside a pod is absolute (`/`), made of non-empty segments separated by `/`,
//! with a trailing `/` for containers. Each raw segment is percent-decoded on its own, so an
//! encoded slash can never create a segment boundary; it is rejected outright, as are `.`/`..`
//! segments (raw or encoded), empty segments, control characters, backslashes and invalid UTF-8.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Why a path was rejected (the node answers 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains an empty segment ('//')")]
    EmptySegment,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("path contains a control character")]
    ControlCharacter,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path is not valid UTF-8 after percent-decoding")]
    InvalidUtf8,
    #[error("path is longer than {0} bytes")]
    TooLong(usize),
}

/// Longest accepted raw path.
pub const MAX_PATH: usize = 4096;

/// Parses the raw (still percent-encoded) path of a request, relative to a pod, into the
/// decoded resource path. `""` is treated as `/`.
pub fn parse_resource_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong(MAX_PATH));
    }
    if raw.is_empty() || raw == "/" {
        return Ok("/".to_string());
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let (body, container) = match rest.strip_suffix('/') {
        Some(b) => (b, true),
        None => (rest, false),
    };
    let mut out = String::with_capacity(raw.len());
    for seg in body.split('/') {
        out.push('/');
        out.push_str(&decode_segment(seg)?);
    }
    if container {
        out.push('/');
    }
    Ok(out)
}

fn decode_segment(seg: &str) -> Result<String, PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let lower = seg.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(PathError::EncodedSeparator);
    }
    let decoded = percent_decode_str(seg)
        .decode_utf8()
        .map_err(|_| PathError::InvalidUtf8)?;
    if decoded == "." || decoded == ".." {
        return Err(PathError::DotSegment);
    }
    if decoded.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlCharacter);
    }
    if decoded.contains('\\') {
        return Err(PathError::Backslash);
    }
    Ok(decoded.into_owned())
}

/// Characters escaped in the path segments we emit (URLs in `Location`, listings).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'^')
    .add(b'|')
    .add(b'\\')
    .add(b'[')
    .add(b']');

/// Percent-encodes a decoded resource path for use in a URL (keeps `/` separators).
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        assert_eq!(parse_resource_path("").unwrap(), "/");
        assert_eq!(parse_resource_path("/").unwrap(), "/");
        assert_eq!(parse_resource_path("/notes/").unwrap(), "/notes/");
        assert_eq!(parse_resource_path("/notes/a.txt").unwrap(), "/notes/a.txt");
        assert_eq!(parse_resource_path("/a%20b/c%C3%A9").unwrap(), "/a b/cé");
        assert_eq!(
            parse_resource_path("/.well-known/x").unwrap(),
            "/.well-known/x"
        );
        assert_eq!(parse_resource_path("/a..b").unwrap(), "/a..b");
    }

    #[test]
    fn rejects_traversal_and_tricks() {
        use PathError::*;
        let cases = [
            ("/../etc/passwd", DotSegment),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/%2e%2e/b", DotSegment),
            ("/a/%2E/b", DotSegment),
            ("/a%2Fb", EncodedSeparator),
            ("/a%2fb", EncodedSeparator),
            ("/a%5Cb", EncodedSeparator),
            ("/a//b", EmptySegment),
            ("/a%00b", ControlCharacter),
            ("/a%0Ab", ControlCharacter),
            ("/a%7Fb", ControlCharacter),
            ("/a\\b", Backslash),
            ("/a%FFb", InvalidUtf8),
            ("a/b", NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_resource_path(raw), Err(want.clone()), "{raw}");
        }
        assert_eq!(
            parse_resource_path(&format!("/{}", "a".repeat(5000))),
            Err(PathError::TooLong(MAX_PATH))
        );
    }

    #[test]
    fn encode_round_trips() {
        for p in ["/", "/a b/c%d", "/x/y?z#w/", "/é/[1]"] {
            let enc = encode_path(p);
            assert!(
                !enc.contains(' ') && !enc.contains('?') && !enc.contains('#'),
                "{enc}"
            );
            assert_eq!(parse_resource_path(&enc).unwrap(), p);
        }
    }
}
