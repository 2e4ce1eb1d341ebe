//! Lenient scalar deserializers of `xcore.yaml` sections: `port: "9000"` (what `${PORT}`
//! yields) is read as a number, `admin_token: 12345` as text. Shared by every section
//! type, wherever it lives; it imports nothing of the host.

use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, DeserializeOwned, Deserializer, Unexpected};
use serde::Deserialize;
use serde_yaml_ng::Value;

struct TypeName(&'static str);
impl de::Expected for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A number or bool, also from a string such as `"9000"`.
pub fn parse<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + DeserializeOwned,
{
    match Value::deserialize(d)? {
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| de::Error::invalid_type(Unexpected::Str(&s), &TypeName(std::any::type_name::<T>()))),
        other => T::deserialize(other).map_err(de::Error::custom),
    }
}

fn scalar_text<E: de::Error>(v: Value) -> Result<Option<String>, E> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Sequence(_) => Err(E::invalid_type(Unexpected::Seq, &"a string")),
        Value::Mapping(_) => Err(E::invalid_type(Unexpected::Map, &"a string")),
        Value::Tagged(_) => Err(E::invalid_type(Unexpected::Other("tagged value"), &"a string")),
    }
}

/// A string, also from a number or bool.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar_text(Value::deserialize(d)?)?.ok_or_else(|| de::Error::invalid_type(Unexpected::Unit, &"a string"))
}

/// An optional string; null is `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar_text(Value::deserialize(d)?)
}

/// A path written as a string.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    string(d).map(PathBuf::from)
}
