use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Object(Vec<u8>),
    Junk(usize),
    TooLarge,
}

fn run(splitter: &mut Splitter, chunks: &[&[u8]]) -> Vec<Got> {
    let mut got = Vec::new();
    for chunk in chunks {
        splitter.feed(chunk, |f| {
            got.push(match f {
                Frame::Object(o) => Got::Object(o.to_vec()),
                Frame::Junk { len } => Got::Junk(len),
                Frame::TooLarge => Got::TooLarge,
            })
        });
    }
    got
}

fn whole(stream: &[u8], max: usize) -> Vec<Got> {
    run(&mut Splitter::new(max), &[stream])
}

fn obj(s: &str) -> Got {
    Got::Object(s.as_bytes().to_vec())
}

#[test]
fn newline_delimited_and_back_to_back_objects() {
    let stream = b"{\"a\":1}\n{\"b\":2}{\"c\":{\"d\":[1,{}]}}  \r\n\t{}";
    assert_eq!(
        whole(stream, 1024),
        vec![
            obj("{\"a\":1}"),
            obj("{\"b\":2}"),
            obj("{\"c\":{\"d\":[1,{}]}}"),
            obj("{}"),
        ]
    );
}

#[test]
fn braces_and_quotes_inside_strings_do_not_count() {
    let a = r#"{"s":"}{\"\\","t":"\\"}"#;
    let b = r#"{"u":"\u007d]"}"#;
    let stream = format!("{a}{b}");
    assert_eq!(whole(stream.as_bytes(), 1024), vec![obj(a), obj(b)]);
}

#[test]
fn pretty_printed_objects_pass_whole() {
    let a = "{\n  \"type\": \"AIM\",\n  \"unit\": \"u\"\n}";
    assert_eq!(whole(a.as_bytes(), 1024), vec![obj(a)]);
}

#[test]
fn top_level_junk_is_dropped_to_the_next_line_or_object() {
    let stream = b"hello\n[1,2]{\"a\":1}42 \n{\"b\":2}";
    assert_eq!(
        whole(stream, 1024),
        vec![
            Got::Junk(5),
            Got::Junk(5),
            obj("{\"a\":1}"),
            Got::Junk(3),
            obj("{\"b\":2}")
        ]
    );
}

#[test]
fn an_object_of_the_limit_passes_and_one_byte_more_does_not() {
    let fits = format!("{{\"k\":\"{}\"}}", "x".repeat(10)); // 18 bytes
    assert_eq!(fits.len(), 18);
    assert_eq!(whole(fits.as_bytes(), 18), vec![obj(&fits)]);
    assert_eq!(whole(fits.as_bytes(), 17), vec![Got::TooLarge]);
}

#[test]
fn an_over_long_object_is_skipped_to_its_end_and_the_next_one_passes() {
    let long = format!("{{\"k\":\"{}\",\"n\":{{\"x\":\"}}\"}}}}", "y".repeat(100));
    let stream = format!("{long}{{\"a\":1}}\n{{\"b\":2}}");
    assert_eq!(
        whole(stream.as_bytes(), 32),
        vec![Got::TooLarge, obj("{\"a\":1}"), obj("{\"b\":2}")]
    );
}

#[test]
fn an_unclosed_object_is_bounded_then_resynchronised_at_a_newline() {
    let stream = format!("{{\"type\":\"AIM\",\"unit\":{}\n{{\"a\":1}}", "[".repeat(3));
    // Kept until the limit (the next object is nested in it), then
    // discarded up to the next newline.
    let mut s = Splitter::new(20);
    let got = run(&mut s, &[stream.as_bytes(), b"\n{\"b\":2}"]);
    assert_eq!(got, vec![Got::TooLarge, obj("{\"a\":1}"), obj("{\"b\":2}")]);
    assert_eq!(s.buffered(), 0);
}

/// A pipelined stream of objects with malformed ones in between, fed split
/// at every byte boundary (and one byte at a time), gives the same frames
/// as fed whole.
#[test]
fn split_at_every_byte_boundary_gives_the_same_frames() {
    let long = format!("{{\"x\":\"{}\"}}", "z".repeat(80));
    let stream = format!(
        "{{\"type\":\"AIM\",\"s\":\"}}\\\"{{\"}}\n{{\"a\":[1,2,{{}}]}}junk\n{long}{{\"b\":\"\\\\\"}}  [3]\n{{\"c\":1}}"
    );
    let bytes = stream.as_bytes();
    let expected = whole(bytes, 64);
    assert_eq!(
        expected,
        vec![
            obj("{\"type\":\"AIM\",\"s\":\"}\\\"{\"}"),
            obj("{\"a\":[1,2,{}]}"),
            Got::Junk(4),
            Got::TooLarge,
            obj("{\"b\":\"\\\\\"}"),
            Got::Junk(3),
            obj("{\"c\":1}"),
        ]
    );
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(
            run(&mut Splitter::new(64), &[a, b]),
            expected,
            "cut at {cut}"
        );
        for cut2 in (cut..=bytes.len()).step_by(7) {
            let (b1, b2) = b.split_at(cut2 - cut);
            assert_eq!(
                run(&mut Splitter::new(64), &[a, b1, b2]),
                expected,
                "cuts at {cut}, {cut2}"
            );
        }
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run(&mut Splitter::new(64), &singles), expected);
}

#[test]
fn a_stream_that_stops_inside_an_object_or_junk_is_not_idle() {
    let mut s = Splitter::new(64);
    assert!(s.is_idle());
    s.feed(b"{\"a\":", |_| {});
    assert!(!s.is_idle());
    s.feed(b"1}  \n", |_| {});
    assert!(s.is_idle());
    s.feed(b"junk", |_| {});
    assert!(!s.is_idle());
}

/// Found by the fuzz target: an object that went over the limit inside a
/// string was cut there when read byte by byte, but only after the string
/// (and the newline that follows it) when read whole, so the newline that
/// ends the discard was missed.
#[test]
fn an_object_goes_over_the_limit_at_the_same_byte_however_it_is_read() {
    let stream = format!("{{\"type\":\"A{}\"\nxy\nz\n{{}}", "~".repeat(40));
    let bytes = stream.as_bytes();
    let expected = vec![Got::TooLarge, Got::Junk(2), Got::Junk(1), obj("{}")];
    assert_eq!(whole(bytes, 16), expected);
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run(&mut Splitter::new(16), &singles), expected);
}
