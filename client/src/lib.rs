//! p2pchat client library.
