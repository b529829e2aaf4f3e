//! The Rust declarations of flare-sys against the C headers, as the system C compiler sees
//! them.
//!
//! The headers (`flare/flare.h` the library was built from, and `flare_candle.h` with the
//! `candle` feature) are parsed for their typedef'd structs and their fields, typedef'd enums
//! and their enumerators, integer `#define`s and `FLARE_API` functions. From that list a C
//! program is generated that prints every struct's size and alignment, every field's offset and
//! size, every enum's size and every enumerator's and define's value, and takes the address of
//! every function (so a name the parse got wrong fails to compile). It is compiled with `cc`
//! (or `$CC`) and its output is compared with the tables of `flare_sys::abi`, in both
//! directions: anything one side has and the other lacks or lays out differently fails.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

#[derive(Default, Debug)]
struct Parsed {
    structs: Vec<(String, Vec<String>)>,
    enums: Vec<(String, Vec<String>)>,
    defines: Vec<String>,
    functions: Vec<String>,
}

/// Removes `/* */` and `//` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            let end = r.find("*/").expect("unterminated comment");
            out.push(' ');
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The last identifier of a declaration fragment (`const void* const* part_ptrs` → part_ptrs).
fn last_ident(fragment: &str) -> Option<String> {
    let cleaned: String = fragment
        .split('[')
        .next()
        .unwrap()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { ' ' })
        .collect();
    cleaned.split_whitespace().last().filter(|w| is_ident(w)).map(str::to_string)
}

/// The body between the `{` at or after `start` and its matching `}`, and the index after it.
fn braced(text: &str, start: usize) -> (String, usize) {
    let open = start + text[start..].find('{').expect("no {");
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (text[open + 1..open + i].to_string(), open + i + 1);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

fn parse_header(text: &str, parsed: &mut Parsed) {
    let text = strip_comments(text);
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('#') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            // `#define NAME <integer>`: an ABI constant.
            if words.len() == 3 && words[0] == "define" && words[2].parse::<i64>().is_ok() {
                parsed.defines.push(words[1].to_string());
            }
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    for (keyword, is_struct) in [("typedef struct", true), ("typedef enum", false)] {
        let mut at = 0;
        while let Some(pos) = code[at..].find(keyword) {
            let start = at + pos;
            let (body, after) = braced(&code, start);
            let end = after + code[after..].find(';').expect("no ; after typedef");
            let name = last_ident(&code[after..end]).expect("typedef without a name");
            let members: Vec<String> = if is_struct {
                body.split(';')
                    .flat_map(|decl| {
                        let decl = decl.trim();
                        if decl.is_empty() {
                            return Vec::new();
                        }
                        // `int64_t a, b, c`: the type is on the first declarator only.
                        decl.split(',').map(|d| last_ident(d).expect("field name")).collect()
                    })
                    .collect()
            } else {
                body.split(',')
                    .filter(|e| !e.trim().is_empty())
                    .map(|e| e.split('=').next().unwrap().trim().to_string())
                    .collect()
            };
            if is_struct {
                parsed.structs.push((name, members));
            } else {
                parsed.enums.push((name, members));
            }
            at = end;
        }
    }
    let mut at = 0;
    while let Some(pos) = code[at..].find("FLARE_API") {
        let start = at + pos + "FLARE_API".len();
        let paren = start + code[start..].find('(').expect("FLARE_API without (");
        parsed.functions.push(last_ident(&code[start..paren]).expect("function name"));
        at = paren;
    }
}

fn c_program(parsed: &Parsed, headers: &[PathBuf]) -> String {
    let mut c = String::from("#include <stddef.h>\n#include <stdio.h>\n");
    for h in headers {
        c += &format!("#include \"{}\"\n", h.display());
    }
    c += "int main(void) {\n";
    for (s, fields) in &parsed.structs {
        c += &format!(
            "  printf(\"struct {s} %zu %zu\\n\", sizeof({s}), (size_t)_Alignof({s}));\n"
        );
        for f in fields {
            c += &format!(
                "  printf(\"field {s}.{f} %zu %zu\\n\", offsetof({s}, {f}), sizeof((({s}*)0)->{f}));\n"
            );
        }
    }
    for (e, values) in &parsed.enums {
        c += &format!("  printf(\"enum {e} %zu\\n\", sizeof({e}));\n");
        for v in values {
            c += &format!("  printf(\"value {e}.{v} %lld\\n\", (long long){v});\n");
        }
    }
    for d in &parsed.defines {
        c += &format!("  printf(\"define {d} %lld\\n\", (long long)({d}));\n");
    }
    for f in &parsed.functions {
        c += &format!("  printf(\"function {f} %d\\n\", (int)(&{f} != 0));\n");
    }
    c += "  return 0;\n}\n";
    c
}

/// Compiles and runs the generated program; its lines `kind key values...` as a map.
fn c_view(parsed: &Parsed, headers: &[PathBuf], include_dirs: &[PathBuf]) -> BTreeMap<String, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("abi_layout.c");
    let exe = dir.join("abi_layout");
    std::fs::write(&source, c_program(parsed, headers)).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let mut cmd = Command::new(&cc);
    cmd.arg("-std=c11").arg("-Wall").arg("-o").arg(&exe).arg(&source);
    for inc in include_dirs {
        cmd.arg("-I").arg(inc);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(
        out.status.success(),
        "the generated C program did not compile ({}):\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let key = parts.next().unwrap();
            (format!("{kind} {key}"), parts.next().unwrap_or("").to_string())
        })
        .collect()
}

/// The same map, from the Rust declarations.
fn rust_view() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for s in flare_sys::abi::STRUCTS {
        m.insert(format!("struct {}", s.name), format!("{} {}", s.size, s.align));
        for f in s.fields {
            m.insert(format!("field {}.{}", s.name, f.name), format!("{} {}", f.offset, f.size));
        }
    }
    for e in flare_sys::abi::ENUMS {
        m.insert(format!("enum {}", e.name), e.size.to_string());
        for (name, value) in e.values {
            m.insert(format!("value {}.{}", e.name, name), value.to_string());
        }
    }
    for (name, value) in flare_sys::abi::DEFINES {
        m.insert(format!("define {name}"), value.to_string());
    }
    let mut functions: Vec<&str> = flare_sys::abi::FUNCTIONS.to_vec();
    #[cfg(feature = "candle")]
    functions.extend_from_slice(flare_sys::candle::FUNCTION_NAMES);
    for f in functions {
        m.insert(format!("function {f}"), "1".to_string());
    }
    m
}

fn headers() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let include = PathBuf::from(env!("FLARE_SYS_INCLUDE_DIR"));
    let mut headers = vec![include.join("flare/flare.h")];
    if cfg!(feature = "candle") {
        headers.push(PathBuf::from(env!("FLARE_SYS_CANDLE_HEADER")));
    }
    (headers, vec![include])
}

/// The FP8 fields of `flare_mha_fwd_params`, in header order.
const FP8_FIELDS: [&str; 11] = [
    "kv_dtype",
    "q_dtype",
    "q_descale",
    "q_descale_batch_stride",
    "q_descale_head_stride",
    "k_descale",
    "k_descale_batch_stride",
    "k_descale_head_stride",
    "v_descale",
    "v_descale_batch_stride",
    "v_descale_head_stride",
];

#[test]
fn rust_declarations_match_the_c_headers() {
    let (headers, include_dirs) = headers();
    let mut parsed = Parsed::default();
    for h in &headers {
        let text = std::fs::read_to_string(h).unwrap_or_else(|e| panic!("{}: {e}", h.display()));
        parse_header(&text, &mut parsed);
    }
    // The parse itself must have found the header's contents, or the comparison means nothing.
    assert!(parsed.structs.iter().any(|(s, f)| s == "flare_mha_fwd_params" && f.len() > 50));
    assert!(parsed.enums.iter().any(|(e, v)| e == "flare_status" && v.len() >= 9));
    assert!(parsed.functions.iter().any(|f| f == "flare_mha_fwd"));

    let c = c_view(&parsed, &headers, &include_dirs);
    let rust = rust_view();
    // The FP8 fields and dtypes (flare.h, "FP8 inputs") are among what is compared, on both sides.
    for key in FP8_FIELDS
        .iter()
        .map(|f| format!("field flare_mha_fwd_params.{f}"))
        .chain(["value flare_dtype.FLARE_DTYPE_E4M3".into(), "value flare_dtype.FLARE_DTYPE_E5M2".into()])
    {
        assert!(c.contains_key(&key), "{key} is not in the C header's view");
        assert!(rust.contains_key(&key), "{key} is not declared in flare-sys");
    }
    let mut problems = Vec::new();
    for (key, value) in &c {
        match rust.get(key) {
            None => problems.push(format!("{key}: in the C header ({value}), missing in Rust")),
            Some(r) if r != value => problems.push(format!("{key}: C says {value}, Rust {r}")),
            _ => {}
        }
    }
    for (key, value) in &rust {
        if !c.contains_key(key) {
            problems.push(format!("{key}: declared in Rust ({value}), not in the C header"));
        }
    }
    assert!(
        problems.is_empty(),
        "flare-sys disagrees with {:?}:\n  {}",
        headers.iter().map(|h| h.display().to_string()).collect::<Vec<_>>(),
        problems.join("\n  ")
    );
}

/// Field order matters as much as offsets: Rust's declaration order is the header's.
#[test]
fn struct_fields_are_declared_in_header_order() {
    let (headers, _) = headers();
    let mut parsed = Parsed::default();
    for h in &headers {
        parse_header(&std::fs::read_to_string(h).unwrap(), &mut parsed);
    }
    for s in flare_sys::abi::STRUCTS {
        let (_, c_fields) = parsed
            .structs
            .iter()
            .find(|(name, _)| name == s.name)
            .unwrap_or_else(|| panic!("{} is not in the header", s.name));
        let rust_fields: Vec<&str> = s.fields.iter().map(|f| f.name).collect();
        assert_eq!(rust_fields, *c_fields, "field order of {}", s.name);
    }
}

/// Every declared function resolves at link time (the address table names each one).
#[test]
fn every_declared_function_links() {
    for (name, address) in flare_sys::function_addresses() {
        assert_ne!(address, 0, "{name}");
    }
    #[cfg(feature = "candle")]
    for (name, address) in flare_sys::candle::function_addresses() {
        assert_ne!(address, 0, "{name}");
    }
}

/// The parser on a small made-up header: multi-declarator fields, pointer-to-pointer fields,
/// arrays, enums without explicit values, and functions returning pointers.
#[test]
fn parser_reads_what_the_headers_use() {
    let text = r#"
        #define FLARE_X 3 /* comment */
        #define FLARE_API __attribute__((visibility("default")))
        typedef enum e { A = 0, B, /* c */ C = 7 } e;
        typedef struct s {
          uint32_t a; // trailing
          const void* const* pp;
          int64_t x, y, z;
          char name[16];
        } s;
        FLARE_API const char* f(void);
        FLARE_API flare_status g(const s* p,
                                 int d);
    "#;
    let mut p = Parsed::default();
    parse_header(text, &mut p);
    assert_eq!(p.defines, ["FLARE_X"]);
    assert_eq!(p.enums, [("e".to_string(), vec!["A".into(), "B".into(), "C".into()])]);
    assert_eq!(
        p.structs,
        [("s".to_string(), vec!["a".into(), "pp".into(), "x".into(), "y".into(), "z".into(), "name".into()])]
    );
    assert_eq!(p.functions, ["f", "g"]);
}
