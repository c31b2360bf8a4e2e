//! What the examples share.

use moe_edge_kernels::GgmlType;

/// The types with packed kernels.
const PACKED: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The packed type named by a command-line argument (`q4_0`, `q8_0`, `q4_k`, `q5_k`, `q6_k`;
/// Q4_0 when absent); exits with a one-line error on another name.
pub fn packed_type(arg: Option<&str>) -> GgmlType {
    let name = arg.unwrap_or("q4_0");
    PACKED
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| {
            eprintln!("error: unknown type {name}: use q4_0, q8_0, q4_k, q5_k or q6_k");
            std::process::exit(2)
        })
}
