//! Links `krust` as a position-dependent executable (as Go links kubelet and k3s). A PIE
//! makes the dynamic loader apply about 60,000 relative relocations at every start: it reads
//! 1.4 MB of `.rela.dyn` and copies every page of pointers it patches (vtables, static
//! strings), about 1 MB, into private memory. Measured on the node agent, whose RSS is a
//! target. The cost: the binary's own code and data are not placed at random addresses
//! (shared libraries, stacks and the heap still are).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
