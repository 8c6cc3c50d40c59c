//! Container output as lines of bounded length.
//!
//! A container that never writes a newline must not grow the agent's
//! memory: a line is kept up to [`MAX_LOG_LINE_BYTES`]; the rest of it, up
//! to the next newline, is read and dropped, and the kept part ends with
//! [`TRUNCATION_MARKER`]. The reader's memory is the cap plus the pipe
//! buffer, whatever the container writes.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest log line kept, in bytes (64 KiB), not counting the marker.
pub const MAX_LOG_LINE_BYTES: usize = 64 * 1024;

/// Appended to a line cut at [`MAX_LOG_LINE_BYTES`].
pub const TRUNCATION_MARKER: &str = "… [line truncated at 64 KiB]";

/// Reads the next line of `reader` into `buf` (cleared first), without its
/// `\n` / `\r\n`, keeping at most `cap` bytes. Returns `None` at the end of
/// input, else whether the line was cut. A last line without a newline is
/// returned too.
pub async fn read_capped_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            if !read_any {
                return Ok(None);
            }
            break;
        }
        read_any = true;
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        if part.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&part[..part.len().min(room)]);
        reader.consume(used);
        if done {
            break;
        }
    }
    if !truncated && buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(truncated))
}

/// The text of a line read by [`read_capped_line`]: invalid UTF-8 replaced,
/// a character cut by the cap dropped, and the marker appended when cut.
pub fn line_text(bytes: &[u8], truncated: bool) -> String {
    if !truncated {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // Drop an incomplete character at the cut rather than printing U+FFFD.
    let end = match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => bytes.len(),
    };
    let mut s = String::from_utf8_lossy(&bytes[..end]).into_owned();
    s.push_str(TRUNCATION_MARKER);
    s
}

/// `line` cut at [`MAX_LOG_LINE_BYTES`] (on a character boundary) and
/// marked, as [`read_capped_line`] and [`line_text`] would give it; used
/// where lines arrive whole (the fake runtime).
#[cfg(any(test, feature = "testing"))]
pub fn cap_line(line: String) -> String {
    if line.len() <= MAX_LOG_LINE_BYTES {
        return line;
    }
    let mut end = MAX_LOG_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = line;
    s.truncate(end);
    s.push_str(TRUNCATION_MARKER);
    s
}

#[cfg(test)]
mod tests;
