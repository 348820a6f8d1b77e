//! Load generator and report writer.
