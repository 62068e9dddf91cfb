//! Signed `/files` URLs (scaffold).
