//! Standard input as a stream of bounded lines, read on a plain thread so that a
//! pending read never holds up exit (tokio's stdin read cannot be cancelled).

use std::io::{BufRead, Read};

use engine::events::InputEvent;
use tokio::sync::mpsc;

/// Starts the reader thread. Lines longer than `max_bytes` are reported and
/// skipped whole; the channel holds a few lines, then the thread waits.
pub fn spawn_stdin(max_bytes: usize) -> mpsc::Receiver<InputEvent> {
    let (tx, rx) = mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            read_lines(stdin.lock(), max_bytes, |event| {
                tx.blocking_send(event).is_ok()
            });
        });
    if spawned.is_err() {
        tracing::error!("could not start the input thread; input is ignored");
    }
    rx
}

/// Reads `reader` line by line, never holding more than `max_bytes + 1` bytes of
/// one line; `emit` returns false when nobody listens any more.
pub fn read_lines(
    mut reader: impl BufRead,
    max_bytes: usize,
    mut emit: impl FnMut(InputEvent) -> bool,
) {
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let limit = u64::try_from(max_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(2);
        let read = match reader.by_ref().take(limit).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if read == 0 {
            emit(InputEvent::Eof);
            return;
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if buf.len() > max_bytes {
            if !complete && !skip_line(&mut reader) {
                emit(InputEvent::TooLong { limit: max_bytes });
                emit(InputEvent::Eof);
                return;
            }
            if !emit(InputEvent::TooLong { limit: max_bytes }) {
                return;
            }
            continue;
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        if !emit(InputEvent::Line(line)) {
            return;
        }
        if !complete {
            emit(InputEvent::Eof);
            return;
        }
    }
}

/// Discards input up to and including the next newline, in bounded chunks.
/// Returns false at end of input.
fn skip_line(reader: &mut impl BufRead) -> bool {
    loop {
        let (found, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(chunk) => match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, chunk.len()),
            },
        };
        reader.consume(used);
        if found {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], max: usize) -> Vec<InputEvent> {
        let mut out = Vec::new();
        read_lines(std::io::Cursor::new(input.to_vec()), max, |e| {
            out.push(e);
            true
        });
        out
    }

    #[test]
    fn lines_and_limits() {
        use InputEvent::*;
        assert_eq!(
            collect(b"hi\r\nthere\n", 10),
            vec![Line("hi".into()), Line("there".into()), Eof]
        );
        assert_eq!(
            collect(b"0123456789abc\nok\n", 10),
            vec![TooLong { limit: 10 }, Line("ok".into()), Eof]
        );
        assert_eq!(
            collect(b"0123456789\n", 10),
            vec![Line("0123456789".into()), Eof]
        );
        assert_eq!(collect(b"last", 10), vec![Line("last".into()), Eof]);
        assert_eq!(collect(b"", 10), vec![Eof]);
    }
}
