//! Test harness placeholder (filled below).
