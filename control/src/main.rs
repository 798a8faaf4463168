fn main() {
    println!("switchyard-control: not yet implemented");
}
