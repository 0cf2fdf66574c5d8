//! Just enough protobuf for Mumble's control channel: varint and
//! length-delimited fields written by hand, and a reader that skips every
//! field it is not asked about (fixed32 and fixed64 included), so messages
//! from newer servers still decode.

/// Why a protobuf payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("the message ends inside a field")]
    Truncated,
    /// A varint runs past ten bytes (more than 64 bits).
    #[error("a varint is longer than 64 bits")]
    VarintTooLong,
    /// Wire type 3/4 (groups, gone since proto3) or 6/7 (undefined): their
    /// length is unknown, so nothing after them can be read.
    #[error("wire type {0} cannot be skipped")]
    UnsupportedWireType(u8),
    /// Field number 0, or one past 32 bits: a payload that has it is not
    /// protobuf.
    #[error("invalid field number {0}")]
    InvalidFieldNumber(u64),
    /// An integer field holds a value too large for its declared type.
    #[error("field {0} is out of range")]
    OutOfRange(u32),
    /// A `string` field holds bytes that are not UTF-8.
    #[error("field {0} is not UTF-8")]
    InvalidUtf8(u32),
}

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The value of an integer or bool field (`None` for another wire type).
    pub(crate) fn varint(self) -> Option<u64> {
        match self {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }

    /// The value of a `string` field `field` (`None` for another wire type).
    pub(crate) fn string(self, field: u32) -> Result<Option<&'a str>, DecodeError> {
        match self {
            Value::Bytes(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| DecodeError::InvalidUtf8(field)),
            _ => Ok(None),
        }
    }
}

/// The fields of a message, in wire order.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

/// Iterates over the fields of `message`; stops at the first error.
pub(crate) fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.read_field();
        if field.is_err() {
            // An error leaves no reliable place to go on from.
            self.rest = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read_field(&mut self) -> Result<(u32, Value<'a>), DecodeError> {
        let key = read_varint(&mut self.rest)?;
        let wire_type = (key & 7) as u8;
        let number = match u32::try_from(key >> 3) {
            Ok(0) | Err(_) => return Err(DecodeError::InvalidFieldNumber(key >> 3)),
            Ok(number) => number,
        };
        let value = match wire_type {
            0 => Value::Varint(read_varint(&mut self.rest)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len = read_varint(&mut self.rest)?;
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            other => return Err(DecodeError::UnsupportedWireType(other)),
        };
        Ok((number, value))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }
}

fn read_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintTooLong)
}

/// Appends `value` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends field `number` with a varint value (integers, bools, enums).
pub(crate) fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// Appends field `number` with a length-delimited value (strings, bytes).
pub(crate) fn put_bytes_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::{DecodeError, Value, fields, put_bytes_field, put_varint, put_varint_field};

    fn all(message: &[u8]) -> Result<Vec<(u32, Value<'_>)>, DecodeError> {
        fields(message).collect()
    }

    #[test]
    fn varints_are_written_seven_bits_at_a_time_low_group_first() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            // It matches the protobuf encoding of the value.
            assert_eq!(out, expected, "{value}");
            // And reads back as the same value.
            let mut input = out.as_slice();
            assert_eq!(super::read_varint(&mut input), Ok(value));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn fields_written_by_hand_read_back_in_order() {
        let mut out = Vec::new();
        put_bytes_field(&mut out, 1, b"alice");
        put_varint_field(&mut out, 5, 1);
        put_varint_field(&mut out, 16, 70000);
        // The key of field 1 with wire type 2 is 0x0a, as protoc writes it.
        assert_eq!(&out[..7], b"\x0a\x05alice");
        // Every field comes back with its number and value.
        assert_eq!(
            all(&out),
            Ok(vec![
                (1, Value::Bytes(b"alice")),
                (5, Value::Varint(1)),
                (16, Value::Varint(70000)),
            ])
        );
    }

    #[test]
    fn fixed32_and_fixed64_fields_are_skipped_whole_so_later_fields_still_read() {
        // Field 2 fixed64, field 3 fixed32 (as a float would be), then field
        // 4 a string: the shape of an unknown field from a newer server.
        let mut message = vec![0x11];
        message.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        message.push(0x1d);
        message.extend_from_slice(&1.5f32.to_bits().to_le_bytes());
        put_bytes_field(&mut message, 4, b"after");
        let read = all(&message).unwrap();
        // The fixed fields carry their little-endian values.
        assert_eq!(read[0], (2, Value::Fixed64(0x0102_0304_0506_0708)));
        assert_eq!(read[1], (3, Value::Fixed32(1.5f32.to_bits())));
        // And the field after them is intact.
        assert_eq!(read[2], (4, Value::Bytes(b"after")));
    }

    #[test]
    fn a_message_cut_inside_a_field_is_truncated_not_a_panic() {
        let mut message = Vec::new();
        put_bytes_field(&mut message, 3, b"welcome");
        for cut in 1..message.len() {
            // Every proper prefix ends inside the only field.
            assert_eq!(all(&message[..cut]), Err(DecodeError::Truncated), "{cut}");
        }
        // A fixed64 with four of its eight bytes is truncated too.
        assert_eq!(all(&[0x09, 1, 2, 3, 4]), Err(DecodeError::Truncated));
        // A length larger than the rest of the message is truncated.
        assert_eq!(all(&[0x1a, 0xff, 0x01, b'x']), Err(DecodeError::Truncated));
    }

    #[test]
    fn groups_field_zero_and_overlong_varints_are_errors() {
        // Wire type 3 (start group) has no length to skip by.
        assert_eq!(all(&[0x0b]), Err(DecodeError::UnsupportedWireType(3)));
        // Field number 0 does not exist in protobuf.
        assert_eq!(all(&[0x00, 0x01]), Err(DecodeError::InvalidFieldNumber(0)));
        // Eleven continuation bytes are more than 64 bits.
        assert_eq!(
            all(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(DecodeError::VarintTooLong)
        );
    }

    #[test]
    fn string_values_must_be_utf8_and_other_wire_types_are_not_strings() {
        // Valid UTF-8 reads as a str.
        assert_eq!(Value::Bytes("café".as_bytes()).string(3), Ok(Some("café")));
        // Invalid UTF-8 names the field.
        assert_eq!(
            Value::Bytes(&[0xff, 0xfe]).string(3),
            Err(DecodeError::InvalidUtf8(3))
        );
        // A varint where a string was expected is ignored, not misread.
        assert_eq!(Value::Varint(7).string(3), Ok(None));
        assert_eq!(Value::Bytes(b"x").varint(), None);
    }
}
