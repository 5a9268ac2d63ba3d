//! Parsing of search requests (URL query parameters) into a [`SearchQuery`](super::SearchQuery).
