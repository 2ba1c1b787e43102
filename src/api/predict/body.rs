//! The request body of `POST /predict`, by its `Content-Type`:
//!
//! ```text
//! image/png | image/jpeg   the bytes of one image
//! application/json         body
//!
//! body      = input | { "instances": [ input, … ] }      1 to MAX_INSTANCES inputs
//! input     = { "pixels": [ value, … ] [, "preprocess": mode ] }
//!           | { "image": base64 [, "preprocess": mode ] }
//! value     = a number 0..=255                           exactly the model's H·W·C of them,
//!                                                        row-major, channels last (784 for
//!                                                        the digit model, white on black)
//! base64    = "<PNG or JPEG>" | "data:image/png;base64,<…>"
//! mode      = "none"            the model sees its values exactly (after its own scaling)
//!           | the model's own   (the default: "digit", "resize" or "none")
//! ```
//!
//! Read as a stream, never as a tree: the body's size is checked first ([`MAX_BODY_BYTES`]),
//! then every array is counted as it streams past ([`bounded`]: what is past the limit is
//! skipped, not kept), so 6 MB of JSON costs what its pixel arrays and image strings cost. A
//! field twice, an unknown field, `instances` beside another field, a value out of range: each
//! a 400 that says where (`instances[3]: pixels[17] is 300; …`).

use super::budget::{MAX_BODY_BYTES, MAX_INSTANCES};
use super::{bad, BadRequest, HttpRequest};
use crate::api::clip;
use crate::net::Preprocess;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use std::borrow::Cow;
use std::fmt;

/// One input as read from the request, before any image is decoded.
pub(super) enum Item<'a> {
    /// Raw values, 0..=255.
    Pixels(Vec<f32>),
    /// Encoded PNG or JPEG bytes.
    Image(Cow<'a, [u8]>),
}

/// An input and whether it asked for no preprocessing (`"preprocess": "none"`).
pub(super) struct RawInput<'a> {
    pub(super) item: Item<'a>,
    pub(super) raw: bool,
}

pub(super) struct RawInputs<'a> {
    pub(super) items: Vec<RawInput<'a>>,
    pub(super) single: bool,
}

/// What the model takes, for the decoder and its messages.
pub(super) struct Expect {
    /// Values in one input.
    pub(super) len: usize,
    /// "784 (28×28, row-major, 0..=255, white digit on black)".
    pub(super) hint: String,
    /// The model's own preprocessing's name.
    preprocess: &'static str,
}

impl Expect {
    pub(super) fn of(spec: &crate::net::spec::ModelSpec) -> Self {
        let i = &spec.input;
        let len = spec.input_len();
        let hint = if i.preprocess == Preprocess::Digit {
            format!(
                "{len} ({}×{}, row-major, 0..=255, white digit on black)",
                i.height, i.width
            )
        } else {
            format!(
                "{len} ({}×{}×{}, row-major, channels last, 0..=255)",
                i.height, i.width, i.channels
            )
        };
        let preprocess = match i.preprocess {
            Preprocess::Digit => "digit",
            Preprocess::Resize => "resize",
            Preprocess::None => "none",
        };
        Self {
            len,
            hint,
            preprocess,
        }
    }
}

pub(super) fn read_inputs<'a>(
    req: &HttpRequest<'a>,
    expect: &Expect,
) -> Result<RawInputs<'a>, BadRequest> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(BadRequest(
            413,
            format!(
                "the body is {} bytes; the limit is {MAX_BODY_BYTES} (6 MB)",
                req.body.len()
            ),
        ));
    }
    let media = req.content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/json") => parse_json(req.body, expect),
        Some("image/png" | "image/jpeg" | "image/jpg") => Ok(RawInputs {
            items: vec![RawInput {
                item: Item::Image(Cow::Borrowed(req.body)),
                raw: false,
            }],
            single: true,
        }),
        other => Err(BadRequest(
            415,
            format!(
                "unsupported content type {}; send application/json ({{\"pixels\":[…{} values…]}}, {{\"image\":\"<base64>\"}} or {{\"instances\":[…]}}), image/png or image/jpeg",
                other.map_or("(none)".to_owned(), |c| format!("{:?}", clip(c))),
                expect.len
            ),
        )),
    }
}

/// Where input `i` of `n` is, for messages.
pub(super) fn place(single: bool, i: usize) -> String {
    if single {
        "the body".to_owned()
    } else {
        format!("instances[{i}]")
    }
}

/// Reads the JSON body without building a tree of it: counts are checked as the values
/// stream past, so 6 MB of JSON costs what its pixel arrays and image strings cost.
fn parse_json(body: &[u8], expect: &Expect) -> Result<RawInputs<'static>, BadRequest> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de::Deserializer::deserialize_any(&mut de, BodyVisitor { expect })
        .and_then(|b| de.end().map(|()| b))
        .map_err(|e| {
            if e.is_data() {
                bad(e.to_string())
            } else {
                bad(format!("the body is not valid JSON ({e})"))
            }
        })?;
    match parsed {
        Body::One(item) => Ok(RawInputs {
            items: vec![item],
            single: true,
        }),
        Body::Many { count, .. } if count > MAX_INSTANCES => Err(BadRequest(
            413,
            format!("{count} instances; at most {MAX_INSTANCES} per request"),
        )),
        Body::Many { count: 0, .. } => Err(bad(format!(
            "\"instances\" is empty; send 1 to {MAX_INSTANCES} items"
        ))),
        Body::Many { items, .. } => Ok(RawInputs {
            items,
            single: false,
        }),
    }
}

enum Body {
    One(RawInput<'static>),
    Many {
        items: Vec<RawInput<'static>>,
        /// Every item, also those past [`MAX_INSTANCES`] (skipped, not kept).
        count: usize,
    },
}

enum Key {
    Pixels,
    Image,
    Preprocess,
    Instances,
    Other(String),
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "pixels" => Key::Pixels,
                    "image" => Key::Image,
                    "preprocess" => Key::Preprocess,
                    "instances" => Key::Instances,
                    other => Key::Other(clip(other)),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The fields of one input, from the top level or an item of `instances`.
#[derive(Default)]
struct Fields {
    pixels: Option<Vec<f32>>,
    image: Option<Vec<u8>>,
    /// `"preprocess": "none"` (true) or the model's own (false).
    raw: Option<bool>,
}

impl Fields {
    fn is_empty(&self) -> bool {
        self.pixels.is_none() && self.image.is_none() && self.raw.is_none()
    }

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: Key,
        map: &mut A,
        at: &str,
        expect: &Expect,
    ) -> Result<(), A::Error> {
        match key {
            Key::Pixels if self.pixels.is_some() => {
                Err(de::Error::custom(format!("{at} has \"pixels\" twice")))
            }
            Key::Image if self.image.is_some() => {
                Err(de::Error::custom(format!("{at} has \"image\" twice")))
            }
            Key::Preprocess if self.raw.is_some() => {
                Err(de::Error::custom(format!("{at} has \"preprocess\" twice")))
            }
            Key::Pixels => {
                self.pixels = Some(map.next_value_seed(PixelsSeed { at, expect })?);
                Ok(())
            }
            Key::Image => {
                self.image = Some(map.next_value_seed(ImageSeed { at })?);
                Ok(())
            }
            Key::Preprocess => {
                let name: Cow<'de, str> = map.next_value().map_err(|_| {
                    de::Error::custom(format!(
                        "{at}: \"preprocess\" must be the string \"none\" or \"{}\"",
                        expect.preprocess
                    ))
                })?;
                self.raw = Some(match name.as_ref() {
                    "none" => true,
                    own if own == expect.preprocess => false,
                    other => {
                        return Err(de::Error::custom(format!(
                            "{at}: \"preprocess\" is {:?}; this model takes \"none\" (its values exactly) or \"{}\" (its own, the default)",
                            clip(other),
                            expect.preprocess
                        )))
                    }
                });
                Ok(())
            }
            Key::Instances => Err(de::Error::custom(format!(
                "{at}: \"instances\" must be the only field, at the top level"
            ))),
            Key::Other(name) => Err(de::Error::custom(format!(
                "{at} has an unknown field {name:?}; expected \"pixels\" or \"image\", and optionally \"preprocess\""
            ))),
        }
    }

    fn finish<E: de::Error>(self, at: &str, expect: &Expect) -> Result<RawInput<'static>, E> {
        let raw = self.raw.unwrap_or(false);
        match (self.pixels, self.image) {
            (Some(p), None) => Ok(RawInput {
                item: Item::Pixels(p),
                raw,
            }),
            (None, Some(i)) => Ok(RawInput {
                item: Item::Image(Cow::Owned(i)),
                raw,
            }),
            (Some(_), Some(_)) => Err(E::custom(format!(
                "{at} has both \"pixels\" and \"image\"; send one"
            ))),
            (None, None) => Err(E::custom(format!(
                "{at} has neither \"pixels\" ({} values 0..=255) nor \"image\" (base64 PNG or JPEG)",
                expect.len
            ))),
        }
    }
}

struct BodyVisitor<'e> {
    expect: &'e Expect,
}

impl<'de> Visitor<'de> for BodyVisitor<'_> {
    type Value = Body;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the body to be a JSON object with \"pixels\", \"image\" or \"instances\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Body, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let at = "the body";
        let mut fields = Fields::default();
        let mut instances = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Instances if instances.is_some() => {
                    return Err(de::Error::custom("\"instances\" appears twice"))
                }
                Key::Instances => {
                    instances = Some(map.next_value_seed(InstancesSeed {
                        expect: self.expect,
                    })?)
                }
                key => fields.read(key, &mut map, at, self.expect)?,
            }
            if instances.is_some() && !fields.is_empty() {
                return Err(de::Error::custom("\"instances\" must be the only field"));
            }
        }
        match instances {
            Some((items, count)) => Ok(Body::Many { items, count }),
            None => fields.finish(at, self.expect).map(Body::One),
        }
    }
}

/// Reads a JSON array keeping at most `keep` elements (each read by `element`, given its
/// index), and only counting the rest as they stream past: what a client sends beyond a limit
/// costs parsing, never memory. `capacity` caps the first allocation, so a limit the body could
/// never reach reserves nothing. Returns the kept elements and the array's whole length.
fn bounded<'de, A, T>(
    seq: &mut A,
    keep: usize,
    capacity: usize,
    mut element: impl FnMut(&mut A, usize) -> Result<Option<T>, A::Error>,
) -> Result<(Vec<T>, usize), A::Error>
where
    A: SeqAccess<'de>,
{
    let mut kept = Vec::with_capacity(keep.min(capacity));
    let mut count = 0usize;
    loop {
        if count < keep {
            match element(seq, count)? {
                Some(v) => kept.push(v),
                None => break,
            }
        } else if seq.next_element::<IgnoredAny>()?.is_none() {
            break;
        }
        count += 1;
    }
    Ok((kept, count))
}

struct InstancesSeed<'e> {
    expect: &'e Expect,
}

impl<'de> DeserializeSeed<'de> for InstancesSeed<'_> {
    type Value = (Vec<RawInput<'static>>, usize);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed<'_> {
    type Value = (Vec<RawInput<'static>>, usize);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"instances\" to be an array of {\"pixels\":…} or {\"image\":…} objects")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        bounded(&mut seq, MAX_INSTANCES, MAX_INSTANCES, |seq, i| {
            let at = format!("instances[{i}]");
            seq.next_element_seed(InstanceSeed {
                at: &at,
                expect: self.expect,
            })
        })
    }
}

struct InstanceSeed<'s> {
    at: &'s str,
    expect: &'s Expect,
}

impl<'de> DeserializeSeed<'de> for InstanceSeed<'_> {
    type Value = RawInput<'static>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstanceSeed<'_> {
    type Value = RawInput<'static>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} to be an object with \"pixels\" or \"image\"",
            self.at
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            fields.read(key, &mut map, self.at, self.expect)?;
        }
        fields.finish(self.at, self.expect)
    }
}

struct PixelsSeed<'s> {
    at: &'s str,
    expect: &'s Expect,
}

impl<'de> DeserializeSeed<'de> for PixelsSeed<'_> {
    type Value = Vec<f32>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PixelsSeed<'_> {
    type Value = Vec<f32>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: \"pixels\" to be an array of {}",
            self.at, self.expect.hint
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let want = self.expect.len;
        // What the body can hold, not what the model declares: a value takes two bytes.
        let (values, count) = bounded(&mut seq, want, MAX_BODY_BYTES / 2, |seq, index| {
            seq.next_element_seed(PixelSeed { at: self.at, index })
        })?;
        if count != want {
            return Err(de::Error::custom(format!(
                "{}: \"pixels\" has {count} values; expected {}",
                self.at, self.expect.hint
            )));
        }
        Ok(values)
    }
}

struct PixelSeed<'s> {
    at: &'s str,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for PixelSeed<'_> {
    type Value = f32;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<f32, D::Error> {
        d.deserialize_any(self)
    }
}

impl PixelSeed<'_> {
    /// The raw value, 0..=255.
    fn value<E: de::Error>(&self, x: f64) -> Result<f32, E> {
        if (0.0..=255.0).contains(&x) {
            Ok(x as f32)
        } else {
            Err(E::custom(format!(
                "{}: pixels[{}] is {x}; values must be in 0..=255",
                self.at, self.index
            )))
        }
    }
}

impl<'de> Visitor<'de> for PixelSeed<'_> {
    type Value = f32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: pixels[{}] to be a number 0..=255",
            self.at, self.index
        )
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
        self.value(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
        self.value(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
        self.value(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
        Err(E::custom(format!(
            "{}: pixels[{}] is {:?}; values must be numbers 0..=255",
            self.at,
            self.index,
            clip(v)
        )))
    }
}

struct ImageSeed<'s> {
    at: &'s str,
}

impl<'de> DeserializeSeed<'de> for ImageSeed<'_> {
    type Value = Vec<u8>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ImageSeed<'_> {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: \"image\" to be a base64 string of a PNG or JPEG",
            self.at
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        // What a browser's canvas.toDataURL() gives: `data:image/png;base64,<base64>`.
        let b64 = match v.trim().strip_prefix("data:") {
            Some(url) => url.split_once(',').map_or(url, |(_, data)| data),
            None => v.trim(),
        };
        crate::api::event::decode_base64(b64)
            .map_err(|e| E::custom(format!("{}: \"image\" is not valid base64 ({e})", self.at)))
    }
}
