//! The pod as the webhook reads it: the fields the engine uses, read by serde's derive with
//! strings borrowed from the input. The server, `mutate`, `doctor`, the golden tests and the
//! fuzz targets all read pods through [`Pod`], so a field the engine starts to use is added here
//! and nowhere else.
//!
//! Every field kept is checked for its type (an object only from a JSON object:
//! [`FromObject`]), and an error names the field by its path; the rest of the pod is skipped.
//! Absent and `null` are both "not there", as in the API server.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::core::json::json_type;

/// The fields of a Pod the webhook reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a Pod object")]
pub struct Pod<'a> {
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub metadata: Option<Metadata<'a>>,
    #[serde(borrow, deserialize_with = "object")]
    pub spec: Spec<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct Metadata<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub labels: Option<Map<'a>>,
    #[serde(borrow, default)]
    pub annotations: Option<Map<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct Spec<'a> {
    #[serde(borrow, default)]
    pub service_account_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub node_selector: Option<Map<'a>>,
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub os: Option<PodOs<'a>>,
    #[serde(borrow, default)]
    pub volumes: Option<List<Volume<'a>>>,
    #[serde(borrow, default)]
    pub containers: Option<List<Container<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<List<Container<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an object")]
pub struct PodOs<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
}

/// A container or an init container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct Container<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub env: Option<List<EnvVar<'a>>>,
    #[serde(borrow, default)]
    pub volume_mounts: Option<List<VolumeMount<'a>>>,
    #[serde(borrow, default)]
    pub volume_devices: Option<List<VolumeDevice<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an object")]
pub struct EnvVar<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct VolumeMount<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub mount_path: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub sub_path: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub sub_path_expr: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct VolumeDevice<'a> {
    #[serde(borrow, default)]
    pub device_path: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an object")]
pub struct Volume<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub projected: Option<ProjectedVolume<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an object")]
pub struct ProjectedVolume<'a> {
    #[serde(borrow, default)]
    pub sources: Option<List<ProjectedSource<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub struct ProjectedSource<'a> {
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub service_account_token: Option<TokenSource<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an object")]
pub struct TokenSource<'a> {
    #[serde(borrow, default)]
    pub path: Option<Str<'a>>,
}

/// Where a container sits in the pod, for the patch's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    Containers,
    InitContainers,
}

impl ContainerList {
    /// The field name, as in the patch's paths.
    pub fn field(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
        }
    }
}

impl<'a> Pod<'a> {
    /// Reads a pod already parsed (the `mutate` and `doctor` commands, tests).
    pub fn from_value(value: &'a Value) -> Result<Self, PodError> {
        if !value.is_object() {
            return Err(not_an_object(json_type(value)));
        }
        Self::deserialize(value).map_err(|first| {
            // Read again, tracking the path: only on this rare path, since tracking costs an
            // allocation per key.
            match serde_path_to_error::deserialize::<_, Self>(value) {
                Err(err) => PodError::from_tracked(err),
                Ok(_) => PodError::new(String::new(), first.to_string()),
            }
        })
    }

    /// Reads a pod from JSON text; its lists and maps as an [`Allowance`] in force bounds them.
    pub fn from_json(text: &'a str) -> Result<Self, PodError> {
        if let Some(other) = leading_json_type(text).filter(|kind| *kind != "an object") {
            return Err(not_an_object(other));
        }
        serde_json::from_str(text).map_err(|first| {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, Self>(&mut deserializer) {
                Err(err) => PodError::from_tracked(err),
                // The pod reads whole: what follows it is the problem.
                Ok(_) => PodError::new(String::new(), without_position(&first.to_string())),
            }
        })
    }

    /// The ServiceAccount it runs as: `spec.serviceAccountName`; empty or absent is `default`.
    pub fn service_account(&self) -> &str {
        match self.spec.service_account_name.as_deref() {
            None | Some("") => "default",
            Some(name) => name,
        }
    }

    /// The pod's name, else its `generateName` (pods of a controller have no name yet).
    pub fn name(&self) -> &str {
        let Some(metadata) = &self.metadata else {
            return "";
        };
        [&metadata.name, &metadata.generate_name]
            .into_iter()
            .filter_map(|field| field.as_deref())
            .find(|value| !value.is_empty())
            .unwrap_or_default()
    }

    /// `metadata.name` as the pod was sent, `None` when absent or empty: a pod made from
    /// `generateName` (by a controller) is named by the API server after admission.
    pub fn given_name(&self) -> Option<&str> {
        let name = self.metadata.as_ref()?.name.as_deref()?;
        Some(name).filter(|name| !name.is_empty())
    }

    /// `metadata.namespace`, empty when absent.
    pub fn namespace(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.namespace.as_deref())
            .unwrap_or_default()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.annotations.as_ref()?.get(key)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.labels.as_ref()?.get(key)
    }

    /// Windows pods need a `C:\...` token path. The reference looks only at the node selectors;
    /// `spec.os.name` says the same thing and is honoured too.
    pub fn is_windows(&self) -> bool {
        let selector = self.spec.node_selector.as_ref();
        let selected = ["kubernetes.io/os", "beta.kubernetes.io/os"]
            .iter()
            .any(|key| selector.and_then(|s| s.get(key)) == Some("windows"));
        let os = self.spec.os.as_ref().and_then(|os| os.name.as_deref());
        selected || os == Some("windows")
    }

    pub fn volumes(&self) -> &[Volume<'a>] {
        self.spec.volumes.as_deref().unwrap_or_default()
    }

    /// Containers, then init containers, each with its list and index.
    pub fn containers(&self) -> impl Iterator<Item = (ContainerList, usize, &Container<'a>)> {
        fn list<'p, 'a>(
            which: ContainerList,
            list: &'p Option<List<Container<'a>>>,
        ) -> impl Iterator<Item = (ContainerList, usize, &'p Container<'a>)> {
            let items = list.as_deref().unwrap_or_default();
            items.iter().enumerate().map(move |(i, c)| (which, i, c))
        }
        list(ContainerList::Containers, &self.spec.containers).chain(list(
            ContainerList::InitContainers,
            &self.spec.init_containers,
        ))
    }
}

impl Container<'_> {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Whether the container sets the variable `name` itself.
    pub fn sets(&self, name: &str) -> bool {
        let env = self.env.as_deref().unwrap_or_default();
        env.iter().any(|var| var.name.as_deref() == Some(name))
    }

    pub fn mounts(&self) -> &[VolumeMount<'_>] {
        self.volume_mounts.as_deref().unwrap_or_default()
    }

    pub fn device_paths(&self) -> impl Iterator<Item = &str> {
        let devices = self.volume_devices.as_deref().unwrap_or_default();
        devices.iter().filter_map(|d| d.device_path.as_deref())
    }
}

impl VolumeMount<'_> {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    pub fn path(&self) -> &str {
        self.mount_path.as_deref().unwrap_or_default()
    }

    /// `subPath` or `subPathExpr` is set: the mount shows part of the volume, not its root.
    pub fn is_partial(&self) -> bool {
        let set = |value: &Option<Str<'_>>| value.as_deref().is_some_and(|v| !v.is_empty());
        set(&self.sub_path) || set(&self.sub_path_expr)
    }
}

impl Volume<'_> {
    /// Whether it is a projected volume with a service-account token at `token_path`, so a
    /// token file is where the identity variables point.
    pub fn holds_token(&self, token_path: &str) -> bool {
        let sources = self.projected.as_ref().and_then(|p| p.sources.as_deref());
        sources.unwrap_or_default().iter().any(|source| {
            let token = source.service_account_token.as_ref();
            token.and_then(|t| t.path.as_deref()) == Some(token_path)
        })
    }
}

/// The pod could not be read as a Pod: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object is not a valid Pod: {}{message}", if .field.is_empty() { String::new() } else { format!("{}: ", .field) })]
pub struct PodError {
    /// The field's path (`spec.containers[0].env`), empty for the object itself.
    pub field: String,
    pub message: String,
}

impl PodError {
    fn new(field: String, message: String) -> Self {
        Self { field, message }
    }

    /// From serde's error at a path, without the JSON reader's line and column, which name a
    /// place in text the user never saw.
    pub(crate) fn from_tracked<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> Self {
        let path = err.path().to_string();
        let field = if path == "." { String::new() } else { path };
        Self::new(field, without_position(&err.into_inner().to_string()))
    }
}

/// The pod is some other JSON value. Checked before reading: serde's derive would read an
/// array as a struct, field by field in order ([`FromObject`] guards the fields within).
fn not_an_object(got: &str) -> PodError {
    PodError::new(String::new(), format!("expected an object, got {got}"))
}

/// The JSON type of the value `text` starts with, by its first character (`None` where no
/// JSON value can start: the reader will say what is wrong).
pub(crate) fn leading_json_type(text: &str) -> Option<&'static str> {
    Some(match text.trim_start().bytes().next()? {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => return None,
    })
}

/// A serde_json message without its ` at line L column C` suffix.
pub(crate) fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => message[..at].to_string(),
        _ => message.to_string(),
    }
}

/// A string of the pod, borrowed from the input unless it holds escapes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(StrVisitor(PhantomData))
    }
}

/// `T` read from a JSON object and nothing else. serde's derive also reads a struct from an
/// array, field by field in order: `{"spec":[]}` would read as an empty spec, and the engine's
/// patch (`add /spec/volumes`) could not apply to the array the pod really holds.
#[derive(Debug)]
pub(crate) struct FromObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FromObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        let visitor = ObjectVisitor(PhantomData);
        deserializer.deserialize_map(visitor).map(FromObject)
    }
}

/// A field that must be an object (`deserialize_with`).
pub(crate) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    FromObject::deserialize(deserializer).map(|object| object.0)
}

/// A field that must be an object, or `null` (`deserialize_with`; absent needs `default`).
pub(crate) fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let object = Option::<FromObject<T>>::deserialize(deserializer)?;
    Ok(object.map(|object| object.0))
}

/// A list of objects of the pod, charged to the [`Allowance`] entry by entry.
#[derive(Debug, Default)]
pub struct List<T>(pub Vec<T>);

impl<T> Deref for List<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::new();
                loop {
                    Allowance::charge::<T, A::Error>()?;
                    match seq.next_element::<FromObject<T>>()? {
                        Some(FromObject(item)) => items.push(item),
                        None => return Ok(List(items)),
                    }
                }
            }
        }

        deserializer.deserialize_seq(ListVisitor(PhantomData))
    }
}

/// An object of strings (labels, annotations, node selectors) in input order, charged to the
/// [`Allowance`] entry by entry. A repeated key's last value counts, as in a JSON map.
#[derive(Debug, Default)]
pub struct Map<'a>(pub Vec<(Str<'a>, Str<'a>)>);

impl Map<'_> {
    pub fn get(&self, key: &str) -> Option<&str> {
        let mut entries = self.0.iter().rev();
        entries.find(|(k, _)| **k == *key).map(|(_, v)| &**v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Map<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for MapVisitor<'a> {
            type Value = Map<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Map<'a>, A::Error> {
                let mut entries = Vec::new();
                loop {
                    Allowance::charge::<(Str<'a>, Str<'a>), A::Error>()?;
                    match map.next_entry()? {
                        Some(entry) => entries.push(entry),
                        None => return Ok(Map(entries)),
                    }
                }
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Memory the lists and maps of a pod being read may take, on this thread. A request body
/// is charged to the server's memory budget at a multiple of its size while it is answered;
/// a pod of thousands of tiny entries (`[{},{},…]`) would take many times that once read, so
/// the request path bounds what reading may take, and a pod over it is left as it is. A real
/// pod stays far below: the API server's defaults make every container, mount and variable
/// larger in the body than in memory.
pub(crate) struct Allowance {
    before: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unbounded,
    Left(usize),
    Spent,
}

thread_local! {
    static ALLOWANCE: Cell<State> = const { Cell::new(State::Unbounded) };
}

/// What a list or map entry over the allowance fails with.
const SPENT: &str =
    "the pod's lists and maps take more memory than this webhook reads for a body of its size";

impl Allowance {
    /// Bounds what the lists and maps read on this thread may take to `bytes`, until dropped.
    pub fn new(bytes: usize) -> Self {
        Self {
            before: ALLOWANCE.replace(State::Left(bytes)),
        }
    }

    /// Whether reading ran out of the allowance: the error it caused is not about the pod's
    /// shape.
    pub fn spent(&self) -> bool {
        ALLOWANCE.get() == State::Spent
    }

    fn charge<T, E: de::Error>() -> Result<(), E> {
        let bytes = std::mem::size_of::<T>();
        match ALLOWANCE.get() {
            State::Unbounded => Ok(()),
            State::Left(left) if left >= bytes => {
                ALLOWANCE.set(State::Left(left - bytes));
                Ok(())
            }
            State::Left(_) | State::Spent => {
                ALLOWANCE.set(State::Spent);
                Err(E::custom(SPENT))
            }
        }
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        ALLOWANCE.set(self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_text(text: &str) -> Result<Pod<'_>, PodError> {
        Pod::from_json(text)
    }

    #[test]
    fn unread_fields_are_skipped_and_strings_borrow() {
        let text = r#"{"metadata":{"name":"p","uid":"x"},"spec":{"containers":[{"name":"a","image":"i","env":[{"name":"E","value":"v"}]}],"tolerations":[1]}}"#;
        let pod = from_text(text).unwrap();
        let (_, _, container) = pod.containers().next().unwrap();
        assert!(matches!(container.name, Some(Str(Cow::Borrowed("a")))));
        assert!(container.sets("E"));
        assert_eq!(pod.name(), "p");
        assert_eq!(pod.given_name(), Some("p"));
    }

    #[test]
    fn a_pod_of_generate_name_has_no_given_name() {
        let pod = from_text(r#"{"metadata":{"name":"","generateName":"web-"},"spec":{}}"#).unwrap();
        assert_eq!(pod.name(), "web-");
        assert_eq!(pod.given_name(), None);
    }

    #[test]
    fn escaped_strings_and_keys_are_decoded() {
        let pod = from_text(
            r#"{"metadata":{"labels":{"a\/b":"c\"d"}},"spec":{"servic\u0065AccountName":"x"}}"#,
        )
        .unwrap();
        assert_eq!(pod.label("a/b"), Some("c\"d"));
        assert_eq!(pod.service_account(), "x");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        for (text, expected) in [
            (
                r#"{"spec":{"containers":[{"name":"a","env":[{"name":5}]}]}}"#,
                "object is not a valid Pod: spec.containers[0].env[0].name: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"spec":{"volumes":"x"}}"#,
                "object is not a valid Pod: spec.volumes: invalid type: string \"x\", expected an array",
            ),
            (
                r#"{"metadata":{"labels":{"a":1}},"spec":{}}"#,
                "object is not a valid Pod: metadata.labels.a: invalid type: integer `1`, expected a string",
            ),
            (
                r#"{"spec":[]}"#,
                "object is not a valid Pod: spec: invalid type: sequence, expected an object",
            ),
            (
                r#"{"metadata":[null,"n"],"spec":{}}"#,
                "object is not a valid Pod: metadata: invalid type: sequence, expected an object",
            ),
            (
                r#"{"spec":{"volumes":[{"projected":{"sources":[[{}]]}}]}}"#,
                "object is not a valid Pod: spec.volumes[0].projected.sources[0]: invalid type: sequence, expected an object",
            ),
            (
                r#"{"spec":{"os":["windows"]}}"#,
                "object is not a valid Pod: spec.os: invalid type: sequence, expected an object",
            ),
            (
                r#"{"spec":null}"#,
                "object is not a valid Pod: spec: invalid type: null, expected an object",
            ),
            (
                r#"{"metadata":{}}"#,
                "object is not a valid Pod: missing field `spec`",
            ),
            (r#""pod""#, "object is not a valid Pod: expected an object, got a string"),
            (r#"[{}]"#, "object is not a valid Pod: expected an object, got an array"),
        ] {
            let err = from_text(text).unwrap_err().to_string();
            assert_eq!(err, expected, "{text}");
            let value: Value = serde_json::from_str(text).unwrap();
            let from_value = Pod::from_value(&value).unwrap_err().to_string();
            assert!(from_value.starts_with(expected.split(": invalid").next().unwrap()), "{from_value}");
        }
    }

    /// Found by the `engine` fuzz target: an escape that JSON's grammar allows but no Rust
    /// string holds (a lone surrogate) is read past in a field the reader skips, as the reader
    /// does not decode what it skips; in a field it reads, the error names the field. (The API
    /// server never sends one: its decoder turns a lone surrogate into U+FFFD.)
    #[test]
    fn a_lone_surrogate_is_skipped_unread_and_named_where_read() {
        let skipped = r#"{"metadata":{"note":"\udddd"},"spec":{"containers":[{"name":"a"}]}}"#;
        assert!(
            serde_json::from_str::<Value>(skipped).is_err(),
            "no Value holds it"
        );
        let pod = from_text(skipped).unwrap();
        assert_eq!(pod.containers().count(), 1);
        let read = r#"{"spec":{"containers":[{"name":"\udddd"}]}}"#;
        let err = from_text(read).unwrap_err();
        assert_eq!(err.field, "spec.containers[0].name", "{err}");
        assert!(err.message.contains("surrogate"), "{err}");
    }

    #[test]
    fn null_is_not_there() {
        let pod = from_text(
            r#"{"metadata":null,"spec":{"volumes":null,"containers":[{"env":null,"name":null}]}}"#,
        )
        .unwrap();
        assert!(pod.metadata.is_none());
        assert!(pod.spec.volumes.is_none());
        let (_, _, container) = pod.containers().next().unwrap();
        assert!(container.env.is_none());
        assert_eq!(container.name(), "");
    }

    #[test]
    fn a_repeated_label_keeps_its_last_value() {
        let pod = from_text(r#"{"metadata":{"labels":{"a":"1","a":"2"}},"spec":{}}"#).unwrap();
        assert_eq!(pod.label("a"), Some("2"));
    }

    #[test]
    fn containers_come_before_init_containers_with_their_indexes() {
        let value = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        let pod = Pod::from_value(&value).unwrap();
        let seen: Vec<_> = pod
            .containers()
            .map(|(list, i, c)| (list.field(), i, c.name()))
            .collect();
        assert_eq!(
            seen,
            [
                ("containers", 0, "a"),
                ("containers", 1, "b"),
                ("initContainers", 0, "i")
            ]
        );
    }

    #[test]
    fn the_allowance_bounds_lists_and_is_restored() {
        let many = format!(
            r#"{{"spec":{{"containers":[{}{{}}]}}}}"#,
            "{},".repeat(10_000)
        );
        {
            let allowance = Allowance::new(many.len() * 4);
            let err = from_text(&many).unwrap_err();
            assert!(allowance.spent(), "{err}");
            assert!(err.message.contains("more memory"), "{err}");
        }
        assert!(
            from_text(&many).is_ok(),
            "unbounded again once the allowance is dropped"
        );
        let real = json!({"spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]}}).to_string();
        let allowance = Allowance::new(real.len() * 4);
        assert!(from_text(&real).is_ok());
        assert!(!allowance.spent());
    }

    #[test]
    fn windows_by_node_selector_or_os() {
        for (spec, windows) in [
            (
                json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
                true,
            ),
            (
                json!({"nodeSelector": {"beta.kubernetes.io/os": "windows"}}),
                true,
            ),
            (json!({"os": {"name": "windows"}}), true),
            (
                json!({"os": {"name": "linux"}, "nodeSelector": {"kubernetes.io/os": "linux"}}),
                false,
            ),
            (json!({}), false),
        ] {
            let value = json!({"spec": spec});
            assert_eq!(
                Pod::from_value(&value).unwrap().is_windows(),
                windows,
                "{value}"
            );
        }
    }
}
