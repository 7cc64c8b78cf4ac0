//! Standard base64 decoding, the one copy OAuth (HTTP Basic credentials) and MCP (`Mcp-Name`
//! headers) share. The sandbox never needs an encoder for standard base64; PKCE's base64url
//! encoding lives with OAuth.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padding optional; `None` for anything else.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for byte in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|&b| b == byte)?;
        acc = (acc << 6) | u32::try_from(value).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Standard base64 that must be padded to a multiple of four characters (at most two `=`);
/// `None` for anything else.
pub(crate) fn decode_padded(text: &str) -> Option<Vec<u8>> {
    let padding = text.len() - text.trim_end_matches('=').len();
    if !text.len().is_multiple_of(4) || padding > 2 {
        return None;
    }
    decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_and_without_padding() {
        assert_eq!(decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode("YWI="), Some(b"ab".to_vec()));
        assert!(decode("not base64!").is_none());
        assert_eq!(decode_padded("w6l0w6k="), Some("été".as_bytes().to_vec()));
        assert!(decode_padded("YQ").is_none());
        assert!(decode_padded("Y===").is_none());
        assert!(decode_padded("***=").is_none());
    }
}
