//! Framing of the backend's byte stream into JSON objects (sans-IO).
//!
//! Backends send one object per line, or objects back to back with no
//! separator at all (what `sock.send(json.dumps(cmd))` does), and TCP
//! splits them across reads anywhere. The splitter does not parse JSON: it
//! follows strings, escapes and nesting depth just far enough to know where
//! a top-level object ends, and hands the object's bytes, exactly as sent,
//! to validation.
//!
//! # Resynchronisation
//! - Whitespace between objects is skipped.
//! - Bytes at the top level that do not open an object (a stray array,
//!   number, word) are junk: they are dropped up to the next newline or
//!   `{`, and reported once as [`Frame::Junk`].
//! - An object longer than the limit is dropped and reported once as
//!   [`Frame::TooLarge`]. The splitter keeps following its nesting without
//!   keeping its bytes, and resumes after its closing brace, or at the first
//!   newline outside a string, whichever comes first: a line-delimited
//!   stream thus recovers at the next line even when the over-long object
//!   never closes (an unbalanced brace in a malformed command).
//! - An object with unbalanced brackets that never closes is bounded by the
//!   same limit.

#![forbid(unsafe_code)]

/// One thing found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete top-level `{...}`, braces included, bytes as sent. It is
    /// balanced, not necessarily valid JSON.
    Object(&'a [u8]),
    /// Top-level bytes that open no object, dropped (`len` of them).
    Junk { len: usize },
    /// An object past the size limit, dropped.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between objects.
    Top,
    /// Inside top-level junk.
    Junk,
    /// Inside an object that is being kept.
    Object,
    /// Inside an object past the limit, followed but not kept.
    Discard,
}

/// Splits a byte stream into top-level JSON objects; see the module docs.
#[derive(Debug)]
pub struct Splitter {
    max: usize,
    state: State,
    depth: u32,
    in_string: bool,
    escape: bool,
    buf: Vec<u8>,
    junk: usize,
}

impl Splitter {
    /// `max` bounds an object's bytes, braces included.
    pub fn new(max: usize) -> Splitter {
        Splitter {
            max: max.max(2),
            state: State::Top,
            depth: 0,
            in_string: false,
            escape: false,
            buf: Vec::new(),
            junk: 0,
        }
    }

    /// Bytes of an unfinished object held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Between objects: no object or junk begun and not finished.
    pub fn is_idle(&self) -> bool {
        self.state == State::Top
    }

    /// Feeds the next bytes of the stream; `emit` gets each frame they
    /// complete, in order.
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(Frame<'_>)) {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Top => {
                    // Skip whitespace; anything but `{` starts junk.
                    let Some(&b) = data.get(i) else { break };
                    if b == b'{' {
                        self.start_object();
                    } else if !b.is_ascii_whitespace() {
                        self.state = State::Junk;
                        self.junk = 1;
                    }
                    i += 1;
                }
                State::Junk => {
                    let Some(&b) = data.get(i) else { break };
                    if b == b'\n' || b == b'{' {
                        emit(Frame::Junk { len: self.junk });
                        self.junk = 0;
                        self.state = State::Top;
                        // `{` is looked at again from `Top`.
                        if b == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.junk += 1;
                        i += 1;
                    }
                }
                State::Object | State::Discard => {
                    let mut rest = data.get(i..).unwrap_or_default();
                    if self.state == State::Object {
                        // Up to the first byte past the limit, so that an
                        // object goes over it at the same byte however the
                        // stream was cut into reads.
                        let room = (self.max + 1).saturating_sub(self.buf.len());
                        rest = rest.get(..room.min(rest.len())).unwrap_or_default();
                    }
                    let (used, end) = self.scan(rest);
                    let taken = rest.get(..used).unwrap_or_default();
                    if self.state == State::Object {
                        if self.buf.len() + taken.len() > self.max {
                            self.buf = Vec::new();
                            self.state = State::Discard;
                            emit(Frame::TooLarge);
                            // An over-long object's end is only followed:
                            // the bytes it would have ended on may close
                            // it now.
                            if end == Some(End::Closed) || end == Some(End::Newline) {
                                self.state = State::Top;
                            }
                        } else {
                            self.buf.extend_from_slice(taken);
                            if end == Some(End::Closed) {
                                emit(Frame::Object(&self.buf));
                                self.buf.clear();
                                self.state = State::Top;
                            }
                        }
                    } else if end.is_some() {
                        self.state = State::Top;
                    }
                    i += used;
                }
            }
        }
    }

    fn start_object(&mut self) {
        self.state = State::Object;
        self.depth = 1;
        self.in_string = false;
        self.escape = false;
        self.buf.clear();
        self.buf.push(b'{');
    }

    /// Follows an object through `data`: how many bytes belong to it, and
    /// whether it ended within them. A newline outside a string ends only
    /// a discarded object.
    fn scan(&mut self, data: &[u8]) -> (usize, Option<End>) {
        for (i, &b) in data.iter().enumerate() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return (i + 1, Some(End::Closed));
                    }
                }
                b'\n' if self.state == State::Discard => return (i + 1, Some(End::Newline)),
                _ => {}
            }
        }
        (data.len(), None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Newline,
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
