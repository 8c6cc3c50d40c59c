//! Tests of `lines`.
#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt, BufReader};

use super::*;

async fn all_lines(input: &[u8], cap: usize) -> Vec<(String, bool)> {
    let mut r = BufReader::new(input);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = read_capped_line(&mut r, &mut buf, cap).await.unwrap() {
        out.push((line_text(&buf, t), t));
    }
    out
}

#[tokio::test]
async fn splits_lines_and_keeps_a_last_line_without_newline() {
    assert_eq!(
        all_lines(b"one\r\ntwo\n\nthree", 100).await,
        vec![
            ("one".to_string(), false),
            ("two".to_string(), false),
            (String::new(), false),
            ("three".to_string(), false),
        ]
    );
    assert!(all_lines(b"", 100).await.is_empty());
}

#[tokio::test]
async fn a_long_line_is_cut_marked_and_the_next_line_is_whole() {
    let mut input = vec![b'x'; 10];
    input.extend_from_slice(b"\nshort\n");
    assert_eq!(
        all_lines(&input, 5).await,
        vec![
            (format!("xxxxx{TRUNCATION_MARKER}"), true),
            ("short".to_string(), false),
        ]
    );
}

#[tokio::test]
async fn a_huge_line_without_newline_is_read_in_bounded_memory() {
    // 64 MiB of output without a single newline, through a small pipe
    // buffer: the line buffer never holds more than the cap.
    let source = tokio::io::repeat(b'y').take(64 * 1024 * 1024);
    let mut r = BufReader::with_capacity(8192, source);
    let mut buf = Vec::new();
    let truncated = read_capped_line(&mut r, &mut buf, MAX_LOG_LINE_BYTES)
        .await
        .unwrap();
    assert_eq!(truncated, Some(true));
    assert_eq!(buf.len(), MAX_LOG_LINE_BYTES);
    assert!(
        buf.capacity() <= 2 * MAX_LOG_LINE_BYTES,
        "{}",
        buf.capacity()
    );
    let text = line_text(&buf, true);
    assert!(
        text.ends_with("… [line truncated at 64 KiB]"),
        "{}",
        &text[text.len() - 40..]
    );
    assert_eq!(text.len(), MAX_LOG_LINE_BYTES + TRUNCATION_MARKER.len());
    // Everything was consumed: the input is at its end.
    assert_eq!(
        read_capped_line(&mut r, &mut buf, MAX_LOG_LINE_BYTES)
            .await
            .unwrap(),
        None
    );
}

#[test]
fn a_character_cut_by_the_cap_is_dropped() {
    // "é" is two bytes; a cut after its first byte drops it.
    assert_eq!(
        line_text("aé".as_bytes()[..2].as_ref(), true),
        format!("a{TRUNCATION_MARKER}")
    );
    let long = "é".repeat(MAX_LOG_LINE_BYTES); // 2 bytes each
    let capped = cap_line(long);
    assert!(capped.ends_with(TRUNCATION_MARKER));
    assert_eq!(capped.len(), MAX_LOG_LINE_BYTES + TRUNCATION_MARKER.len());
    assert_eq!(cap_line("short".to_string()), "short");
}
