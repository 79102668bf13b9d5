//! The pod read straight from the request's text, for the request path: the same [`Node`]
//! tree as [`read_pod`](super::read_pod), built in one validating pass over the bytes without
//! serde's visitor calls, which were most of the cost of reading a large pod.
//!
//! The scanner handles the common case only. It declines (`None`) on anything else, and the
//! caller then reads with serde, whose answer, errors and messages included, stays the
//! reference:
//! - invalid JSON;
//! - a `\u` escape of a surrogate in a key it reads or a string it keeps (serde pairs or
//!   refuses those; other escapes are decoded as serde decodes them);
//! - a number where a value is kept (serde refuses one out of range);
//! - skipped containers nested deeper than [`MAX_SKIP_DEPTH`].
//!
//! Whatever it accepts is valid JSON, read as serde reads it: the same grammar (RFC 8259,
//! as `serde_json` checks it: no control characters in strings, four hex digits after `\u`,
//! no leading zeros, no trailing commas) and, where it keeps values, the same tree.

use std::borrow::Cow;

use super::node::{Fields, Node, Shape};

/// Deeper skipped nesting is declined rather than tracked.
const MAX_SKIP_DEPTH: usize = 256;

/// A cursor over JSON text that validates all it passes over. The text must be UTF-8 (it is
/// a `&str`), so strings can be cut at their quotes.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    at: usize,
    /// Open containers of the value being skipped (`[` or `{`).
    open: Vec<u8>,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            at: 0,
            open: Vec::new(),
        }
    }

    /// Only whitespace is left.
    pub(crate) fn end(&mut self) -> Option<()> {
        match self.peek() {
            None => Some(()),
            Some(_) => None,
        }
    }

    /// The next non-whitespace byte, not consumed; `None` at the end.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&byte) = bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    #[inline]
    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.peek()? == expected).then(|| self.at += 1)
    }

    /// A string value, kept.
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        self.kept_string()
    }

    /// `true` if the next value is `null` (then read), `false` if it is anything else (left
    /// to be read).
    pub(crate) fn null(&mut self) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal(b"null").map(|()| true)
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// Reads an array, `each` reading every element.
    pub(crate) fn array(&mut self, each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.elements(each)
    }

    /// Reads an object, calling `each` with every key, positioned at its value, which `each`
    /// must read. Keys are read as kept strings.
    pub(crate) fn object(
        &mut self,
        mut each: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.members(&mut each)
    }

    /// The members of an object whose `{` has been read.
    fn members(
        &mut self,
        each: &mut impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        let mut more = !self.closes(b'}')?;
        while more {
            self.eat(b'"')?;
            let key = self.kept_string()?;
            self.eat(b':')?;
            each(self, key)?;
            more = self.comma_or(b'}')?;
        }
        Some(())
    }

    /// The elements of an array whose `[` has been read; `each` reads one element.
    fn elements(&mut self, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        let mut more = !self.closes(b']')?;
        while more {
            each(self)?;
            more = self.comma_or(b']')?;
        }
        Some(())
    }

    /// Right after an opening bracket: whether `close` follows (and is consumed).
    fn closes(&mut self, close: u8) -> Option<bool> {
        let closed = self.peek()? == close;
        self.at += usize::from(closed);
        Some(closed)
    }

    /// After a member or element: `true` at a comma (another follows), `false` at `close`;
    /// either is consumed.
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            byte if byte == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// One value read with `shape`, as `read_pod`'s visitor reads it. Most kept values are
    /// strings (names, label and annotation values): those are read here, inlined into the
    /// caller, rather than through a call to the whole reader per string.
    #[inline(always)]
    pub(crate) fn shaped(&mut self, shape: &'static Shape) -> Option<Node<'a>> {
        if self.peek()? == b'"' {
            self.at += 1;
            return Some(Node::Str(self.kept_string()?));
        }
        self.shaped_other(shape)
    }

    /// [`Scanner::shaped`] for anything but a string.
    #[inline(never)]
    fn shaped_other(&mut self, shape: &'static Shape) -> Option<Node<'a>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| Node::Null),
            b't' | b'f' => self.boolean().map(|_| Node::Bool),
            b'[' => {
                self.at += 1;
                let Shape::Array(inner, cap) = shape else {
                    self.elements(Self::skip_value)?;
                    return Some(Node::Skipped("an array"));
                };
                let (mut items, mut len) = (Vec::new(), 0);
                self.elements(|scanner| {
                    len += 1;
                    if items.len() < *cap {
                        items.push(scanner.shaped(inner)?);
                        Some(())
                    } else {
                        scanner.skip_value()
                    }
                })?;
                Some(if len == items.len() {
                    Node::Array(items)
                } else {
                    Node::TooLong { len, cap: *cap }
                })
            }
            b'{' => {
                self.at += 1;
                let mut fields = Vec::new();
                match shape {
                    Shape::Object(members) => {
                        fields.reserve_exact(members.len());
                        self.members(&mut |scanner, key| match members
                            .iter()
                            .find(|(name, _)| *name == key)
                        {
                            Some((name, shape)) => {
                                fields.push((Cow::Borrowed(*name), scanner.shaped(shape)?));
                                Some(())
                            }
                            None => scanner.skip_value(),
                        })?;
                    }
                    Shape::Map => self.members(&mut |scanner, key| {
                        fields.push((key, scanner.shaped(&Shape::Scalar)?));
                        Some(())
                    })?,
                    Shape::Scalar | Shape::Array(..) => {
                        self.members(&mut |scanner, _| scanner.skip_value())?;
                        return Some(Node::Skipped("an object"));
                    }
                }
                Some(Node::Object(Fields::from_members(fields)))
            }
            // Numbers included: serde refuses one out of range where it keeps it.
            _ => None,
        }
    }

    /// Skips one value of any kind, checking it. Containers are tracked on a stack, not by
    /// recursion, so no input can exhaust the thread's stack.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        // Most skipped values are strings: no stack for them.
        if self.peek()? == b'"' {
            self.at += 1;
            return self.skip_string();
        }
        let outer = self.open.len();
        let skipped = self.skip_nested(outer);
        self.open.truncate(outer);
        skipped
    }

    fn skip_nested(&mut self, outer: usize) -> Option<()> {
        // After an opening bracket, a member or the close may follow; after a member, a comma
        // or the close.
        let mut first = self.open_or_skip_scalar()?;
        while self.open.len() > outer {
            let container = *self.open.last()?;
            let close = if container == b'[' { b']' } else { b'}' };
            let next = self.peek()?;
            if next == close {
                self.at += 1;
                self.open.pop();
                first = false;
                continue;
            }
            if !first {
                if next != b',' {
                    return None;
                }
                self.at += 1;
            }
            if container == b'{' {
                self.eat(b'"')?;
                self.skip_string()?;
                self.eat(b':')?;
            }
            first = self.open_or_skip_scalar()?;
        }
        Some(())
    }

    /// Opens a container (true) or skips a scalar (false).
    fn open_or_skip_scalar(&mut self) -> Option<bool> {
        match self.peek()? {
            open @ (b'[' | b'{') => {
                if self.open.len() >= MAX_SKIP_DEPTH {
                    return None;
                }
                self.at += 1;
                self.open.push(open);
                Some(true)
            }
            b'"' => {
                self.at += 1;
                self.skip_string().map(|()| false)
            }
            b'n' => self.literal(b"null").map(|()| false),
            b't' | b'f' => self.boolean().map(|_| false),
            b'-' | b'0'..=b'9' => self.skip_number().map(|()| false),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let bytes = self.text.as_bytes();
        let end = self.at + word.len();
        (bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn skip_number(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let digits = |at: &mut usize| {
            let start = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > start
        };
        let mut at = self.at;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match bytes.get(at)? {
            b'0' => {
                at += 1;
                if bytes.get(at).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                digits(&mut at);
            }
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if !digits(&mut at) {
                return None;
            }
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            if !digits(&mut at) {
                return None;
            }
        }
        self.at = at;
        Some(())
    }

    /// A string whose opening quote has been read: borrowed as it stands, or decoded if it has
    /// escapes. Declined for a control character (invalid) and for a `\u` escape of a
    /// surrogate, which serde pairs or refuses.
    #[inline(always)]
    fn kept_string(&mut self) -> Option<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let end = special_byte(bytes, start);
        match bytes.get(end)? {
            b'"' => {
                self.at = end + 1;
                self.text.get(start..end).map(Cow::Borrowed)
            }
            b'\\' => self.decoded_string(start, end).map(Cow::Owned),
            _ => None,
        }
    }

    /// The rest of [`Scanner::kept_string`] from the first escape, at `at`.
    #[cold]
    #[inline(never)]
    fn decoded_string(&mut self, start: usize, mut at: usize) -> Option<String> {
        let bytes = self.text.as_bytes();
        let mut decoded = String::from(self.text.get(start..at)?);
        loop {
            match bytes.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some(decoded);
                }
                b'\\' => {
                    let (code, length) = escape(bytes, at)?;
                    decoded.push(char::from_u32(code)?);
                    at += length;
                }
                // A control character.
                _ => return None,
            }
            let next = special_byte(bytes, at);
            decoded.push_str(self.text.get(at..next)?);
            at = next;
        }
    }

    /// Skips a string whose opening quote has been read, checking its escapes.
    fn skip_string(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        loop {
            let at = special_byte(bytes, self.at);
            match bytes.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some(());
                }
                b'\\' => self.at = at + escape(bytes, at)?.1,
                // A control character.
                _ => return None,
            }
        }
    }
}

/// The escape whose backslash is at `at`: the code it stands for (for `\u`, a UTF-16 unit,
/// which may be half a surrogate pair) and its length; `None` if it is not one of JSON's.
fn escape(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
    let code = match bytes.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = bytes
                .get(at + 2..at + 6)?
                .iter()
                .try_fold(0, |unit, &digit| {
                    Some(unit * 16 + char::from(digit).to_digit(16)?)
                })?;
            return Some((unit, 6));
        }
        _ => return None,
    };
    Some((u32::from(code), 2))
}

/// The offset of the first `"`, `\` or control character at or after `from`, or the length:
/// where a JSON string ends or escapes, in reading it and (the patch) in writing it.
/// Eight bytes at a time: each test below flags the first matching byte of a word exactly
/// (a borrow only runs towards higher bytes), so the lowest flag is the first match.
#[inline]
pub(super) fn special_byte(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = from;
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let flags = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let flags = flags & HIGHS;
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            return at;
        }
        at += 1;
    }
    at
}

/// The pod in `text` as the scanner reads it, if it accepts the whole text as one value.
fn scan_pod(text: &str) -> Option<Node<'_>> {
    let mut scanner = Scanner::new(text);
    let pod = scanner.shaped(&super::node::POD)?;
    scanner.end()?;
    Some(pod)
}

/// The scanner's promise, checked on one text (for the tests and the `pod_scan` fuzz target):
/// where it accepts `text` as a pod, serde accepts it too and reads the same tree.
#[doc(hidden)]
pub fn check_scanner_against_serde(text: &str) -> Result<(), String> {
    let Some(scanned) = scan_pod(text) else {
        return Ok(());
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let read = super::read_pod(&mut deserializer).and_then(|pod| deserializer.end().map(|()| pod));
    match read {
        Ok(read) if read == scanned => Ok(()),
        Ok(read) => Err(format!("scanned {scanned:?}, serde read {read:?}")),
        Err(err) => Err(format!("scanned {scanned:?}, serde refused: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_serde(text: &str) -> Option<Node<'_>> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let pod = super::super::read_pod(&mut deserializer).ok()?;
        deserializer.end().ok()?;
        Some(pod)
    }

    /// What the scanner accepts, serde accepts, with the same tree.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        check_scanner_against_serde(text)
            .map_err(|problem| TestCaseError::fail(format!("{problem}; text: {text}")))
    }

    #[test]
    fn special_bytes_are_found_in_every_position_of_a_word() {
        for len in 0..20 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                    }
                    assert_eq!(special_byte(&bytes, 0), at, "{bytes:?}");
                }
            }
            let plain: Vec<u8> = (0..len).map(|i| [b'a', 0x20, 0x7f, 0xc3][i % 4]).collect();
            assert_eq!(special_byte(&plain, 0), len);
        }
    }

    #[test]
    fn a_plain_pod_is_read_as_serde_reads_it() {
        let text = r#" {"metadata":{"name":"p","labels":{"a":"b","c":null},"x":[1,{"y":2.5e-3}]},
            "spec":{"serviceAccountName":"sa","os":{"name":"linux"},"containers":[{"name":"c",
            "env":[{"name":"A","value":"v\"\u00e9\n"},{"name":"B","valueFrom":{}}],
            "volumeMounts":[{"name":"m","mountPath":"/m"}]}],"volumes":[],"nodeSelector":{},
            "initContainers":[true,"x",[],{}],"tolerations":[-0,0.0,1E+2,true,false,null]}} "#;
        let scanned = scan_pod(text).expect("accepted");
        assert_eq!(Some(scanned), by_serde(text));
    }

    #[test]
    fn escapes_in_kept_strings_and_keys_are_decoded_as_serde_decodes_them() {
        let text = r#"{"metadata":{"labels":{"a\/b":"c\"d\\e\u00e9\n\t\b\f\r\u0000"}},
            "spec":{"serviceAccount\u004eame":"s\u2028"}}"#;
        let scanned = scan_pod(text).expect("accepted");
        let labels = scanned.get("metadata").unwrap().get("labels").unwrap();
        assert_eq!(
            labels.get("a/b").and_then(Node::as_str),
            Some("c\"d\\e\u{e9}\n\t\u{8}\u{c}\r\0")
        );
        assert_eq!(Some(scanned), by_serde(text));
    }

    #[test]
    fn what_serde_refuses_or_pairs_is_declined() {
        for text in [
            r#"{"spec":{"serviceAccountName":"\ud83d\ude00"}}"#,
            r#"{"spec":{"serviceAccountName":"\ud800"}}"#,
            r#"{"metadata":{"labels":{"\udfff":"a"}}}"#,
            r#"{"spec":{"serviceAccountName":"\u00e"}}"#,
            r#"{"spec":{"serviceAccountName":"\u+0e9"}}"#,
            r#"{"spec":{"serviceAccountName":"\x"}}"#,
            r#"{"metadata":{"labels":{"a":1}}}"#,
            r#"{"x":"\u12"}"#,
            r#"{"x":"\q"}"#,
            "{\"x\":\"a\u{1}\"}",
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":1e}"#,
            r#"{"x":-}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":{"a":1,}}"#,
            r#"{"x":{"a" 1}}"#,
            r#"{"x":nul}"#,
            r#"{"x":[}"#,
            r#"{"x":{]}"#,
            r#"{} {}"#,
            r#"{"#,
            "",
        ] {
            assert_eq!(scan_pod(text), None, "{text}");
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(scan_pod(&deep), None, "declined, not recursed into");
        let shallow = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(scan_pod(&shallow).is_some());
    }

    /// Valid text with a few bytes changed: mostly near misses of the grammar, some still
    /// valid, some still accepted.
    fn near_miss() -> impl Strategy<Value = String> {
        let edit = (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(&b"{}[],: \"\\ux0-.eE1\x01"[..]),
        );
        (pod_like(), prop::collection::vec(edit, 1..4)).prop_map(|(value, edits)| {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            for (at, kind, byte) in edits {
                let at = at.index(bytes.len() + 1);
                match kind {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => drop(bytes.remove(at)),
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.push(byte),
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn accepted_near_misses_are_read_exactly_as_serde_reads_them(text in near_miss()) {
            agrees(&text)?;
        }

        #[test]
        fn valid_json_with_the_pods_member_names_is_read_as_serde_reads_it(value in pod_like()) {
            let text = serde_json::to_string(&value).unwrap();
            agrees(&text)?;
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            agrees(&pretty)?;
        }
    }

    /// Valid JSON whose keys are mostly the pod's member names, so that the shapes are
    /// followed deep, with strings that need escapes and numbers of every form.
    fn pod_like() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{json, Value};
        let leaf = prop_oneof![
            2 => Just(Value::Null),
            2 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(|n| json!(n)),
            1 => any::<f64>().prop_map(|n| json!(n)),
            2 => "[a-z\"\\\u{1}\u{e9}/\n\t\r\u{8}\u{c}]{0,5}".prop_map(Value::String),
            12 => "[a-z\u{e9}/]{0,5}".prop_map(Value::String),
        ];
        let key = prop_oneof![
            8 => prop::sample::select(vec![
                "metadata", "spec", "name", "labels", "annotations", "containers",
                "initContainers", "env", "volumeMounts", "volumes", "projected", "sources",
                "serviceAccountToken", "path", "os", "nodeSelector", "mountPath",
                "serviceAccountName", "volumeDevices", "devicePath",
            ])
            .prop_map(str::to_string),
            4 => "[a-z]{1,3}",
            1 => "[a-z\"]{1,3}",
        ];
        let object = |members: Vec<(String, Value)>| Value::Object(members.into_iter().collect());
        let value = leaf.prop_recursive(8, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(object),
            ]
        });
        let top_key =
            prop::sample::select(vec!["metadata", "spec", "kind"]).prop_map(str::to_string);
        prop::collection::vec((top_key, value), 0..4).prop_map(object)
    }

    /// The agreement properties would hold vacuously if the scanner declined everything.
    #[test]
    fn the_generated_values_are_often_accepted() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut accepted, mut near_misses_accepted) = (0, 0);
        for _ in 0..1000 {
            let value = pod_like().new_tree(&mut runner).unwrap().current();
            accepted += usize::from(scan_pod(&serde_json::to_string(&value).unwrap()).is_some());
            let near = near_miss().new_tree(&mut runner).unwrap().current();
            near_misses_accepted += usize::from(scan_pod(&near).is_some());
        }
        assert!(accepted > 100, "{accepted} of 1000 accepted");
        assert!(
            near_misses_accepted > 50,
            "{near_misses_accepted} of 1000 near misses accepted"
        );
    }

    #[test]
    fn a_large_plain_pod_is_accepted() {
        let containers: Vec<_> = (0..20)
            .map(|c| {
                let env: Vec<_> = (0..50)
                    .map(|e| serde_json::json!({"name": format!("E{e}"), "value": format!("v{e}")}))
                    .collect();
                serde_json::json!({"name": format!("c{c}"), "image": "i:1", "env": env,
                    "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]})
            })
            .collect();
        let pod = serde_json::json!({"metadata": {"name": "p", "labels": {"app": "a"}},
            "spec": {"containers": containers, "serviceAccountName": "sa"}});
        let text = serde_json::to_string(&pod).unwrap();
        let scanned = scan_pod(&text).expect("accepted");
        assert_eq!(Some(scanned), by_serde(&text));
    }
}
