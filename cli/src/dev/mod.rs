//! `chatctl dev`: the stack on a laptop. So far: the local Lambda runtime
//! that runs the functions' real binaries.

pub mod runtime;
