//! Object keys: the names a manifest gives its snapshot parts in the checkpoint store.
//!
//! A manifest read back is untrusted input, and a store turns a key into a file name or an object
//! name. A key is therefore one plain name, never a path: nothing in it can climb out of the
//! store's directory or name something the store did not write.

use core::fmt;

/// The longest key in bytes: `NAME_MAX` of Linux and most file systems.
pub const MAX_KEY_LEN: usize = 255;

/// Why a string is not an acceptable object key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The key is `.` or `..`, which name a directory, not an object.
    DotName,
    /// The key holds a path separator (`/` or `\`), so it is a path (absolute or relative), not
    /// one name.
    Separator {
        /// Byte offset of the separator.
        at: usize,
    },
    /// The key holds a NUL byte, which ends a name early in C APIs.
    Nul {
        /// Byte offset of the NUL.
        at: usize,
    },
    /// The key holds an ASCII control character other than NUL, or a `:` (a drive or stream
    /// name on Windows).
    Forbidden {
        /// Byte offset of the character.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("object key is empty"),
            KeyError::TooLong { len } => {
                write!(
                    f,
                    "object key is {len} bytes long, the limit is {MAX_KEY_LEN}"
                )
            }
            KeyError::DotName => f.write_str("object key is `.` or `..`"),
            KeyError::Separator { at } => {
                write!(f, "object key holds a path separator at byte {at}")
            }
            KeyError::Nul { at } => write!(f, "object key holds a NUL byte at byte {at}"),
            KeyError::Forbidden { at, byte } => {
                write!(
                    f,
                    "object key holds the forbidden byte {byte:#04x} at byte {at}"
                )
            }
        }
    }
}

impl core::error::Error for KeyError {}

/// Checks that `key` is one plain object name a store may open: not empty, at most
/// [`MAX_KEY_LEN`] bytes, not `.` or `..`, and free of `/`, `\`, NUL, other ASCII control
/// characters and `:`. Other bytes (UTF-8 included) are allowed.
///
/// [`Manifest::decode`](super::Manifest::decode) and [`Manifest::encode`](super::Manifest::encode)
/// apply it to every part; a store applies it again before it opens a name.
///
/// # Errors
/// The first rule `key` breaks, in the order above.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if key == "." || key == ".." {
        return Err(KeyError::DotName);
    }
    for (at, &byte) in key.as_bytes().iter().enumerate() {
        match byte {
            b'/' | b'\\' => return Err(KeyError::Separator { at }),
            0 => return Err(KeyError::Nul { at }),
            b':' | 0x01..=0x1f | 0x7f => return Err(KeyError::Forbidden { at, byte }),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_accepted() {
        for key in ["a", "op-1.part-0007", "...", ".hidden", "ключ", "a..b"] {
            assert_eq!(validate_key(key), Ok(()), "{key}");
        }
        let longest = [b'k'; MAX_KEY_LEN];
        assert_eq!(
            validate_key(core::str::from_utf8(&longest).unwrap()),
            Ok(())
        );
    }

    #[test]
    fn each_rule_has_its_own_error() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        let long = [b'k'; MAX_KEY_LEN + 1];
        assert_eq!(
            validate_key(core::str::from_utf8(&long).unwrap()),
            Err(KeyError::TooLong {
                len: MAX_KEY_LEN + 1
            })
        );
        assert_eq!(validate_key("."), Err(KeyError::DotName));
        assert_eq!(validate_key(".."), Err(KeyError::DotName));
        assert_eq!(validate_key("/etc"), Err(KeyError::Separator { at: 0 }));
        assert_eq!(validate_key("../x"), Err(KeyError::Separator { at: 2 }));
        assert_eq!(validate_key("a\\b"), Err(KeyError::Separator { at: 1 }));
        assert_eq!(validate_key("a\0"), Err(KeyError::Nul { at: 1 }));
        assert_eq!(
            validate_key("C:x"),
            Err(KeyError::Forbidden { at: 1, byte: b':' })
        );
        assert_eq!(
            validate_key("a\nb"),
            Err(KeyError::Forbidden { at: 1, byte: b'\n' })
        );
        assert_eq!(
            validate_key("a\x7f"),
            Err(KeyError::Forbidden { at: 1, byte: 0x7f })
        );
    }
}
