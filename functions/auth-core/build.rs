// New migration files must rebuild the crate, since refinery embeds them at compile time.
fn main() {
    println!("cargo:rerun-if-changed=../../sql");
}
