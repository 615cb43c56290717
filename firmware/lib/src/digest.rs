//! CRC-32 digests of results, so that a host can compare a whole run's
//! outputs with its own in one number: core's running CRC-32 (zlib's, the
//! one `normcore::model::crc32` computes over a whole buffer, with the table
//! the model parser links anyway).

pub use normcore::model::Crc32;
