//! A macro for string enums received from devices, where a value outside
//! the known set must not fail the parse.

/// Declares a string enum that keeps values outside its known set as
/// `Unknown(String)`.
///
/// The generated type has `KNOWN` (the wire strings in declaration order),
/// `from_wire`, `as_str`, `is_unknown`, `Display`, and serde impls that
/// read and write the bare string, so it works in both plist and JSON.
macro_rules! tolerant_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )+
            /// A value outside the known set, kept as the device sent it.
            Unknown(String),
        }

        impl $name {
            /// Wire strings of the known values, in schema order.
            pub const KNOWN: &'static [&'static str] = &[$($wire),+];

            /// Maps a wire string to its variant, or to `Unknown` when the
            /// string is outside the known set.
            pub fn from_wire(value: &str) -> Self {
                match value {
                    $( $wire => $name::$variant, )+
                    other => $name::Unknown(other.to_owned()),
                }
            }

            /// Returns the wire string.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Unknown(value) => value,
                }
            }

            /// Returns true for a value outside the known set.
            pub fn is_unknown(&self) -> bool {
                matches!(self, $name::Unknown(_))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                Ok($name::from_wire(&value))
            }
        }
    };
}
