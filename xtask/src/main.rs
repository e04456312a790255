fn main() { print!("{}", appshot_uapi::c_header::header()); }
