//! A client certificate's identity as a user name, the way mosquitto's
//! `use_identity_as_username` takes it: the subject's common name, else the
//! first DNS name of the subject alternative names.
//!
//! The certificate has been verified by rustls before this runs, but its
//! bytes are still the peer's: the DER walk below is bounds-checked at every
//! step and gives up (`None`) on anything it does not expect.
#![forbid(unsafe_code)]

use rustls_pki_types::CertificateDer;

/// DER of the attribute type id-at-commonName (2.5.4.3), value only.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_TELETEX_STRING: u8 = 0x14;
const TAG_IA5_STRING: u8 = 0x16;

/// The identity of the end-entity certificate `leaf`, if it has one.
pub fn of_certificate(leaf: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    if let Some(cn) = common_name(cert.subject()) {
        return Some(cn);
    }
    cert.valid_dns_names().next().map(str::to_string)
}

/// The first common name in a DER `Name`'s contents (the RDN sequence
/// without its outer tag), when it is a string type.
pub fn common_name(mut rdns: &[u8]) -> Option<String> {
    while !rdns.is_empty() {
        let (tag, rdn, rest) = next_tlv(rdns)?;
        rdns = rest;
        if tag != TAG_SET {
            return None;
        }
        let mut attributes = rdn;
        while !attributes.is_empty() {
            let (tag, attribute, rest) = next_tlv(attributes)?;
            attributes = rest;
            if tag != TAG_SEQUENCE {
                return None;
            }
            let (tag, oid, value) = next_tlv(attribute)?;
            if tag != TAG_OID || oid != OID_COMMON_NAME {
                continue;
            }
            let (tag, text, _) = next_tlv(value)?;
            return match tag {
                TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING | TAG_TELETEX_STRING => {
                    let text = std::str::from_utf8(text).ok()?;
                    (!text.is_empty()).then(|| text.to_string())
                }
                _ => None,
            };
        }
    }
    None
}

/// Splits one DER element off `input`: its tag, its contents and the rest.
/// Low tag numbers and definite lengths of up to four bytes only, which is
/// all a certificate name uses.
fn next_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = (rest.get(..count)?, rest.get(count..)?);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SET { SEQUENCE { OID, value } }` for one attribute.
    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut attribute = vec![TAG_OID, oid.len() as u8];
        attribute.extend_from_slice(oid);
        attribute.extend_from_slice(&[tag, value.len() as u8]);
        attribute.extend_from_slice(value);
        let mut sequence = vec![TAG_SEQUENCE, attribute.len() as u8];
        sequence.extend_from_slice(&attribute);
        let mut set = vec![TAG_SET, sequence.len() as u8];
        set.extend_from_slice(&sequence);
        set
    }

    const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn common_name_after_other_attributes() {
        let mut name = rdn(OID_ORGANIZATION, TAG_UTF8_STRING, b"Example");
        name.extend(rdn(OID_COMMON_NAME, TAG_PRINTABLE_STRING, b"device-7"));
        assert_eq!(common_name(&name).as_deref(), Some("device-7"));
    }

    #[test]
    fn no_common_name_or_a_bad_one_gives_none() {
        assert_eq!(
            common_name(&rdn(OID_ORGANIZATION, TAG_UTF8_STRING, b"x")),
            None
        );
        assert_eq!(common_name(&rdn(OID_COMMON_NAME, 0x04, b"bytes")), None);
        assert_eq!(
            common_name(&rdn(OID_COMMON_NAME, TAG_UTF8_STRING, b"")),
            None
        );
        assert_eq!(
            common_name(&rdn(OID_COMMON_NAME, TAG_UTF8_STRING, b"\xff")),
            None
        );
    }

    #[test]
    fn truncated_or_lying_lengths_give_none() {
        let name = rdn(OID_COMMON_NAME, TAG_UTF8_STRING, b"device-7");
        for n in 0..name.len() {
            assert_eq!(common_name(&name[..n]), None, "{n} bytes");
        }
        let mut long = name.clone();
        long[1] = 0x84;
        assert_eq!(common_name(&long), None);
        assert_eq!(common_name(&[TAG_SET, 0x80]), None);
        assert_eq!(common_name(&[0x1f, 0x00]), None);
    }
}
