//! The pod as the engine reads it: a borrowed JSON tree holding only the fields listed in
//! [`POD`], built in one pass over the bytes. Everything else is skipped without being built,
//! and strings borrow from the input unless they contain escapes.
//!
//! Each kept position records the JSON type it met, so the engine's shape checks name the
//! offending field exactly as they would on a full tree. Lists longer than a cap are not kept:
//! they are counted and reported, which bounds the engine's work per pod.
//!
//! [`read_pod`] reads through serde, from any source. The request path reads with the
//! faster [`Scanner`](super::scan::Scanner) first, which builds the same tree or declines;
//! `scan`'s tests hold the two to the same answers.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// At most this many containers, and separately init containers, are read; a longer list
/// gets `allowed: false`. Far above any real pod, low enough to bound the work per request.
pub(crate) const MAX_CONTAINERS: usize = 256;
/// At most this many entries in any other list the engine reads (env, volume mounts, volume
/// devices, volumes, projected sources).
pub(crate) const MAX_ENTRIES: usize = 4096;

/// A value at a position the engine reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool,
    Number,
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Fields<'a>),
    /// An array or object where the schema expects something else: only its type is kept.
    Skipped(&'static str),
    /// An array with more entries than its cap; none kept.
    TooLong {
        len: usize,
        cap: usize,
    },
}

/// An object's kept members in input order. A repeated key keeps its last value, as a full
/// JSON map would.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

impl<'a> Fields<'a> {
    /// Members as read, in input order.
    pub(crate) fn from_members(members: Vec<(Cow<'a, str>, Node<'a>)>) -> Self {
        Self(members)
    }

    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }
}

impl<'a> Node<'a> {
    /// The JSON type, with its article, for messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool => "a boolean",
            Node::Number => "a number",
            Node::Str(_) => "a string",
            Node::Array(_) | Node::TooLong { .. } => "an array",
            Node::Object(_) => "an object",
            Node::Skipped(what) => what,
        }
    }

    /// A member of an object; `None` for anything else, like `serde_json::Value::get`.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(fields) => fields.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// What to keep at a position.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A string is kept; anything else only by type.
    Scalar,
    /// The listed members are kept, others skipped.
    Object(&'static [(&'static str, Shape)]),
    /// Every member is kept, each as a [`Shape::Scalar`] (labels, annotations, selectors).
    Map,
    /// Every element is kept with the inner shape, up to the cap.
    Array(&'static Shape, usize),
}

const NAMED: Shape = Shape::Object(&[("name", Shape::Scalar)]);
const CONTAINER: Shape = Shape::Object(&[
    ("name", Shape::Scalar),
    ("env", Shape::Array(&NAMED, MAX_ENTRIES)),
    (
        "volumeMounts",
        Shape::Array(
            &Shape::Object(&[
                ("name", Shape::Scalar),
                ("mountPath", Shape::Scalar),
                ("subPath", Shape::Scalar),
                ("subPathExpr", Shape::Scalar),
            ]),
            MAX_ENTRIES,
        ),
    ),
    (
        "volumeDevices",
        Shape::Array(
            &Shape::Object(&[("devicePath", Shape::Scalar)]),
            MAX_ENTRIES,
        ),
    ),
]);
const VOLUME: Shape = Shape::Object(&[
    ("name", Shape::Scalar),
    (
        "projected",
        Shape::Object(&[(
            "sources",
            Shape::Array(
                &Shape::Object(&[(
                    "serviceAccountToken",
                    Shape::Object(&[("path", Shape::Scalar)]),
                )]),
                MAX_ENTRIES,
            ),
        )]),
    ),
]);

/// Every field of a pod the webhook reads.
pub(crate) static POD: Shape = Shape::Object(&[
    (
        "metadata",
        Shape::Object(&[
            ("name", Shape::Scalar),
            ("generateName", Shape::Scalar),
            ("namespace", Shape::Scalar),
            ("labels", Shape::Map),
            ("annotations", Shape::Map),
        ]),
    ),
    (
        "spec",
        Shape::Object(&[
            ("serviceAccountName", Shape::Scalar),
            ("nodeSelector", Shape::Map),
            ("os", Shape::Object(&[("name", Shape::Scalar)])),
            ("volumes", Shape::Array(&VOLUME, MAX_ENTRIES)),
            ("containers", Shape::Array(&CONTAINER, MAX_CONTAINERS)),
            ("initContainers", Shape::Array(&CONTAINER, MAX_CONTAINERS)),
        ]),
    ),
]);

/// Reads a pod from any serde source: request bytes, or an already-parsed `serde_json::Value`.
pub(crate) fn read_pod<'de, D: Deserializer<'de>>(source: D) -> Result<Node<'de>, D::Error> {
    ShapeSeed(&POD).deserialize(source)
}

/// Reads one value with the given shape.
#[derive(Clone, Copy)]
pub(crate) struct ShapeSeed(pub &'static Shape);

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        deserializer.deserialize_any(ShapeVisitor(self.0))
    }
}

struct ShapeVisitor(&'static Shape);

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node<'de>, E> {
        Ok(Node::Number)
    }
    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(text)))
    }
    fn visit_str<E>(self, text: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(text.to_owned())))
    }
    fn visit_string<E>(self, text: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let Shape::Array(inner, cap) = self.0 else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Node::Skipped("an array"));
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(*cap));
        while items.len() < *cap {
            match seq.next_element_seed(ShapeSeed(inner))? {
                Some(item) => items.push(item),
                None => return Ok(Node::Array(items)),
            }
        }
        let mut len = items.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            len += 1;
        }
        if len == items.len() {
            return Ok(Node::Array(items));
        }
        Ok(Node::TooLong { len, cap: *cap })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields = Vec::new();
        match self.0 {
            Shape::Object(members) => {
                // At most one kept member per name in well-formed input: one allocation of
                // the right size (an env entry keeps one member, not the default four).
                fields.reserve_exact(members.len());
                while let Some(index) = map.next_key_seed(MemberIndex(members))? {
                    match index {
                        Some(i) => {
                            let (name, shape) = &members[i];
                            let value = map.next_value_seed(ShapeSeed(shape))?;
                            fields.push((Cow::Borrowed(*name), value));
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
            }
            Shape::Map => {
                while let Some(key) = map.next_key_seed(KeySeed)? {
                    let value = map.next_value_seed(ShapeSeed(&Shape::Scalar))?;
                    fields.push((key, value));
                }
            }
            Shape::Scalar | Shape::Array(..) => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Node::Skipped("an object"));
            }
        }
        Ok(Node::Object(Fields(fields)))
    }
}

/// A key matched against the schema's member names without being copied.
///
/// Read as bytes: serde_json then skips the UTF-8 check of the key, which is a large share of
/// the cost of reading the many small objects of a pod (an env entry is two keys and a name).
/// A key equal to a member name is ASCII; any other key is still checked, so a key that is not
/// UTF-8 is refused as before.
struct MemberIndex(&'static [(&'static str, Shape)]);

impl MemberIndex {
    fn find<E: de::Error>(&self, key: &[u8]) -> Result<Option<usize>, E> {
        let found = self.0.iter().position(|(name, _)| name.as_bytes() == key);
        if found.is_none() && std::str::from_utf8(key).is_err() {
            return Err(E::invalid_value(de::Unexpected::Bytes(key), self));
        }
        Ok(found)
    }
}

impl<'de> DeserializeSeed<'de> for MemberIndex {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for MemberIndex {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key in UTF-8")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        self.find(key.as_bytes())
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<usize>, E> {
        self.find(key)
    }
}

/// A key kept as is: borrowed unless it contains escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_bytes(text: &str) -> Node<'_> {
        read_pod(&mut serde_json::Deserializer::from_str(text)).unwrap()
    }

    #[test]
    fn unread_fields_are_not_kept_and_read_ones_borrow() {
        let pod = from_bytes(
            r#"{"metadata":{"name":"p","uid":"x"},"spec":{"containers":[{"name":"a","image":"i","env":[{"name":"E","value":"v"}]}],"tolerations":[1]}}"#,
        );
        let spec = pod.get("spec").unwrap();
        assert!(spec.get("tolerations").is_none());
        assert!(pod.get("metadata").unwrap().get("uid").is_none());
        let container = &spec.get("containers").unwrap().as_array().unwrap()[0];
        assert!(container.get("image").is_none());
        assert!(matches!(
            container.get("name"),
            Some(Node::Str(Cow::Borrowed("a")))
        ));
    }

    #[test]
    fn wrong_types_are_recorded_not_built() {
        let pod = from_bytes(r#"{"spec":{"containers":{"a":[1,2]},"volumes":"x","os":[1]}}"#);
        let spec = pod.get("spec").unwrap();
        assert_eq!(spec.get("containers"), Some(&Node::Skipped("an object")));
        assert_eq!(spec.get("volumes").unwrap().type_name(), "a string");
        assert_eq!(spec.get("os"), Some(&Node::Skipped("an array")));
    }

    #[test]
    fn repeated_keys_keep_the_last_value_like_a_json_map() {
        let pod = from_bytes(r#"{"spec":{"serviceAccountName":"a","serviceAccountName":"b"}}"#);
        let spec = pod.get("spec").unwrap();
        assert_eq!(
            spec.get("serviceAccountName").and_then(Node::as_str),
            Some("b")
        );
    }

    #[test]
    fn lists_over_the_cap_are_counted_not_kept() {
        let containers: Vec<_> = (0..MAX_CONTAINERS + 3)
            .map(|_| json!({"name": "c"}))
            .collect();
        let value = json!({"spec": {"containers": containers}});
        let pod = read_pod(&value).unwrap();
        assert_eq!(
            pod.get("spec").unwrap().get("containers"),
            Some(&Node::TooLong {
                len: MAX_CONTAINERS + 3,
                cap: MAX_CONTAINERS
            })
        );
        let exactly: Vec<_> = (0..MAX_CONTAINERS).map(|_| json!({})).collect();
        let value = json!({"spec": {"containers": exactly}});
        let pod = read_pod(&value).unwrap();
        let kept = pod.get("spec").unwrap().get("containers").unwrap();
        assert_eq!(kept.as_array().map(<[_]>::len), Some(MAX_CONTAINERS));
    }

    #[test]
    fn member_keys_are_matched_escaped_or_not_and_must_be_utf8() {
        let pod = from_bytes(r#"{"spec":{"service\u0041ccountName":"a","containers":[]}}"#);
        let spec = pod.get("spec").unwrap();
        assert_eq!(
            spec.get("serviceAccountName").and_then(Node::as_str),
            Some("a")
        );
        assert!(spec.get("containers").is_some());
        let mut bytes = br#"{"spec":{"x":1}}"#.to_vec();
        bytes[10] = 0xff;
        let read = read_pod(&mut serde_json::Deserializer::from_slice(&bytes));
        assert!(read.is_err(), "a key that is not UTF-8 is refused");
    }

    #[test]
    fn escaped_strings_and_keys_are_decoded() {
        let pod = from_bytes(r#"{"metadata":{"labels":{"a\/b":"c\"d"}},"spec":{}}"#);
        let labels = pod.get("metadata").unwrap().get("labels").unwrap();
        assert_eq!(labels.get("a/b").and_then(Node::as_str), Some("c\"d"));
    }
}
