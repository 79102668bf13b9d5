//! The patch the engine answers with: RFC 6902 `add` operations written straight as JSON text,
//! in the order the engine decides them. The request path sends this text (base64'd) as is,
//! with no tree of `serde_json::Value`s built and serialized per operation; whoever applies the
//! patch (the `mutate` command, the doctor, tests) reads it into `json_patch::Patch` with
//! [`Patch::operations`].
//!
//! Every path is assembled from tokens, so `~` and `/` in keys (label names, say) are escaped
//! as JSON Pointer requires.

use std::fmt;

use json_patch::jsonptr::Token;

use super::scan::special_byte;

/// A value to add, borrowed: written into the patch without being built as a tree first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Json<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Array(&'a [Json<'a>]),
    Object(&'a [(&'a str, Json<'a>)]),
}

/// A JSON patch of `add` operations, as text.
#[derive(Clone, PartialEq, Eq)]
pub struct Patch {
    /// A JSON array of operation objects.
    json: String,
    len: usize,
}

impl Default for Patch {
    fn default() -> Self {
        Self {
            json: "[]".into(),
            len: 0,
        }
    }
}

impl Patch {
    /// An empty patch with room for about `bytes` of operations, so writing them seldom grows it.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        let mut json = String::with_capacity(bytes);
        json.push_str("[]");
        Self { json, len: 0 }
    }

    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The patch as a JSON array, as sent to the API server.
    pub fn as_json(&self) -> &str {
        &self.json
    }

    /// The operations, for applying them. The text is always a valid patch (this module writes
    /// it); an error here is a bug in it, reported rather than panicking.
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_str(&self.json)
    }

    /// Appends `add` at the path made of `tokens`.
    pub(crate) fn add(&mut self, tokens: &[&str], value: Json<'_>) {
        // Reopen the array: drop the closing `]`.
        self.json.pop();
        if self.len > 0 {
            self.json.push(',');
        }
        self.json.push_str(r#"{"op":"add","path":""#);
        for &token in tokens {
            self.json.push('/');
            // JSON Pointer's own escapes (`~0`, `~1`) first, then JSON's.
            escaped(&mut self.json, Token::new(token).encoded());
        }
        self.json.push_str(r#"","value":"#);
        value.write(&mut self.json);
        self.json.push_str("}]");
        self.len += 1;
    }

    /// Appends `values` to the list at `list` (a path of tokens): one `add .../-` per value when
    /// the list exists, or one `add` that creates it. Nothing already in the list is rewritten.
    pub(crate) fn append_all(&mut self, list: &[&str], exists: bool, values: &[Json<'_>]) {
        if values.is_empty() {
            return;
        }
        if !exists {
            self.add(list, Json::Array(values));
            return;
        }
        let mut path = Vec::with_capacity(list.len() + 1);
        path.extend_from_slice(list);
        path.push("-");
        for value in values {
            self.add(&path, *value);
        }
    }
}

/// The JSON text, as `Debug` shows it in test failures.
impl fmt::Debug for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

/// Serializes as the array of operations it holds, for callers that embed it in JSON of their
/// own (the `mutate` command's output, the golden files).
impl serde::Serialize for Patch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let operations = self.operations().map_err(serde::ser::Error::custom)?;
        operations.serialize(serializer)
    }
}

impl Json<'_> {
    fn write(&self, out: &mut String) {
        match *self {
            Json::Str(text) => string(out, text),
            Json::Int(number) => {
                use fmt::Write;
                let _ = write!(out, "{number}");
            }
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn string(out: &mut String, text: &str) {
    out.push('"');
    escaped(out, text);
    out.push('"');
}

/// The characters of `text` with JSON's escapes; runs that need none are copied whole, found
/// eight bytes at a time as the scanner finds them.
fn escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    loop {
        let at = special_byte(bytes, start);
        // Only ASCII bytes end a run, so both slices fall on character boundaries.
        out.push_str(&text[start..at]);
        let Some(&byte) = bytes.get(at) else {
            return;
        };
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0xf)] as char);
            }
        }
        start = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_empty_patch_is_an_empty_array() {
        let patch = Patch::default();
        assert_eq!(patch.as_json(), "[]");
        assert!(patch.is_empty());
        assert_eq!(patch.operations().unwrap(), json_patch::Patch(vec![]));
    }

    #[test]
    fn operations_are_written_as_json_patch_reads_them() {
        let mut patch = Patch::default();
        patch.add(
            &["metadata", "labels", "eks.amazonaws.com/pod-identity"],
            Json::Str("enabled"),
        );
        patch.append_all(
            &["spec", "containers", "0", "env"],
            true,
            &[
                Json::Object(&[("name", Json::Str("A")), ("value", Json::Str("1"))]),
                Json::Object(&[("name", Json::Str("B")), ("value", Json::Str("x~y"))]),
            ],
        );
        patch.append_all(
            &["spec", "volumes"],
            false,
            &[Json::Int(-7), Json::Bool(true)],
        );
        patch.append_all(&["spec", "nothing"], false, &[]);
        assert_eq!(patch.len(), 4);
        let expected = json!([
            {"op": "add", "path": "/metadata/labels/eks.amazonaws.com~1pod-identity", "value": "enabled"},
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "A", "value": "1"}},
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "B", "value": "x~y"}},
            {"op": "add", "path": "/spec/volumes", "value": [-7, true]},
        ]);
        let written: serde_json::Value = serde_json::from_str(patch.as_json()).unwrap();
        assert_eq!(written, expected);
        assert_eq!(
            patch.operations().unwrap(),
            serde_json::from_value::<json_patch::Patch>(expected.clone()).unwrap()
        );
        assert_eq!(serde_json::to_value(&patch).unwrap(), expected);
        assert_eq!(format!("{patch:?}"), patch.as_json());
    }

    proptest! {
        /// Any string, as a value, a key or a path token, comes back as it went in, and is
        /// escaped byte for byte as serde_json escapes it.
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(text in any::<String>()) {
            let mut written = String::new();
            string(&mut written, &text);
            prop_assert_eq!(&written, &serde_json::to_string(&text).unwrap());

            let mut patch = Patch::default();
            patch.add(&["a", &text], Json::Object(&[(&text, Json::Str(&text))]));
            let operations = patch.operations().unwrap();
            let json_patch::PatchOperation::Add(add) = &operations.0[0] else {
                panic!("not an add: {operations:?}");
            };
            let pointer = json_patch::jsonptr::PointerBuf::from_tokens(["a", text.as_str()]);
            prop_assert_eq!(&add.path, &pointer);
            prop_assert_eq!(&add.value, &json!({text.clone(): text}));
        }
    }
}
