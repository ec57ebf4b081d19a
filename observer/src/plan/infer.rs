//! `--size/--alloc-id/--release-id auto`: locations read off the DWARF
//! signatures of the pool's functions, with the x86-64 Rust ABI facts the
//! README lists (hidden return slot for results over 16 bytes, results up
//! to 16 bytes in rax:rdx, structs over 16 bytes passed by reference) and
//! the parameters' own entry locations from DWARF.

use observer_ebpf::ReturnTest;

use super::keys::{self, IdKind, PoolScope};
use super::loc::Location;
use crate::resolve::signature::{
    next_argument, register_text, EntryLocation, Parameter, Signature, TypeShape,
};

/// A location found automatically, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    pub location: Location,
    pub reason: String,
}

fn inferred(text: &str, reason: String) -> Result<Inferred, String> {
    let location = Location::parse(text).map_err(|e| e.to_string())?;
    Ok(Inferred { location, reason })
}

fn returned(signature: &Signature) -> Result<&TypeShape, String> {
    signature
        .returns
        .as_ref()
        .ok_or_else(|| "allocate returns nothing, so there is no buffer to follow".to_string())
}

/// What `--alloc-id auto` found: the id, which returns are allocations,
/// and what the id is unique within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Inferred,
    /// For an enum result: the kernel's test of the success variant, and
    /// the test in words.
    pub success: Option<(ReturnTest, String)>,
    /// For an integer key: its type and the pool it is unique within.
    pub key: Option<KeyScope>,
}

/// An integer key and the pool instance it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub type_name: String,
    /// allocate's `self` at entry, or the pool's type; `None` when
    /// allocate has no `self` (the key is then taken as unique in the
    /// process).
    pub pool: Option<PoolScope>,
}

impl KeyScope {
    /// What the id is, in words (the report's `locations.identity`).
    pub fn describe(&self) -> String {
        match &self.pool {
            Some(pool) => keys::scope_text(&self.type_name, pool),
            None => format!(
                "integer key ({}), unscoped: allocate has no `self`",
                self.type_name
            ),
        }
    }
}

/// The buffer's identity when allocate returns: the first pointer in what
/// it returns (for an enum, in its success variant), else an integer key.
pub fn alloc_identity(signature: &Signature) -> Result<Identity, String> {
    let result = returned(signature)?;
    let value = keys::result_value(result, signature)?;
    let (location, _) = keys::value_at(result.size, value.offset, 8)
        .map_err(|why| format!("{} ({} bytes): its id's {why}", result.name, result.size))?;
    let place = match location.to_string().as_str() {
        "ret" => crate::arch::RETURN_REGISTERS[0].to_string(),
        "ret.1" => format!(
            "{} (ret.1, the second half of a 16-byte result)",
            crate::arch::RETURN_REGISTERS[1]
        ),
        _ => format!(
            "the hidden return slot whose address is in {}, at offset {}",
            crate::arch::HIDDEN_RESULT_REGISTER,
            value.offset
        ),
    };
    let what = match &value.kind {
        IdKind::Pointer => "its first pointer".to_string(),
        IdKind::Key { type_name } => format!("the integer key ({type_name})"),
    };
    let variant = value
        .success
        .as_ref()
        .map(|s| format!(" in {}", s.variant))
        .unwrap_or_default();
    let mut reason = format!(
        "{} ({} bytes) returns {what}{variant} in {place}",
        result.name, result.size
    );
    let success = match &value.success {
        Some(test) => {
            let text = test.describe(result);
            reason.push_str(&format!("; {text}"));
            Some((test.compile(result.size)?, text))
        }
        None => None,
    };
    let key = match value.kind {
        IdKind::Pointer => None,
        IdKind::Key { type_name } => {
            let pool = match keys::pool_parameter(signature) {
                Some(parameter) => {
                    Some(PoolScope::Instance(scope_location("allocate", parameter)?))
                }
                None => None,
            };
            let scope = KeyScope { type_name, pool };
            reason.push_str(&format!("; the id is an {}", scope.describe()));
            Some(scope)
        }
    };
    Ok(Identity {
        id: Inferred { location, reason },
        success,
        key,
    })
}

/// Where the pool instance (`self`) is at a function's entry.
fn scope_location(role: &str, parameter: &Parameter) -> Result<Location, String> {
    match parameter.location {
        EntryLocation::Register(register) => {
            Location::parse(&register_text(register)).map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "DWARF does not say which register holds {role}'s `self` at its entry, which an integer key is scoped to"
        )),
    }
}

/// The pool instance a key is scoped to at release's entry: its `self`.
pub fn release_scope(release: &Signature) -> Result<Location, String> {
    let parameter = keys::pool_parameter(release).ok_or_else(|| {
        "release has no `self`, so the pool an integer key belongs to is unknown there".to_string()
    })?;
    scope_location("release", parameter)
}

/// The buffer's identity when allocate returns (see [`alloc_identity`]).
pub fn alloc_id(signature: &Signature) -> Result<Inferred, String> {
    alloc_identity(signature).map(|identity| identity.id)
}

const SIZE_NAMES: [&str; 6] = ["capacity", "cap", "len", "size", "bytes", "length"];

/// The buffer's size: a size field of what allocate returns (what the pool
/// really handed out), else a size parameter.
pub fn size(signature: &Signature) -> Result<Inferred, String> {
    let result = returned(signature)?;
    if let Some(found) = size_field(result) {
        return Ok(found);
    }
    if let Some(found) = element_size(signature)? {
        return Ok(found);
    }
    let parameter = signature
        .parameters
        .iter()
        .find(|p| {
            SIZE_NAMES.contains(&p.name.as_str())
                && matches!(p.location, EntryLocation::Register(_))
        })
        .ok_or_else(|| {
            format!(
                "neither {} nor a parameter is named like a size ({})",
                result.name,
                SIZE_NAMES.join(", ")
            )
        })?;
    let EntryLocation::Register(register) = parameter.location else {
        unreachable!("filtered above");
    };
    let register = register_text(register);
    inferred(
        &register,
        format!("parameter `{}`, in {register} at entry", parameter.name),
    )
}

/// A size field of the returned value (of its success variant, for an
/// `Option`/`Result`), where the return leaves it: the hidden slot, or
/// rax/rdx for results of up to 16 bytes.
fn size_field(result: &TypeShape) -> Option<Inferred> {
    let (field, offset, variant) = match result.scalar_named(&SIZE_NAMES) {
        Some((field, offset)) => (field, offset, None),
        None => {
            let (base, payload, variant) = keys::success_payload(result)?;
            let (field, offset) = payload.scalar_named(&SIZE_NAMES)?;
            (field, base + offset, Some(variant))
        }
    };
    let (location, shift) = keys::value_at(result.size, offset, 8).ok()?;
    if shift != 0 {
        return None;
    }
    let place = match location.to_string().as_str() {
        "ret" => format!("in {}", crate::arch::RETURN_REGISTERS[0]),
        "ret.1" => format!("in {} (ret.1)", crate::arch::RETURN_REGISTERS[1]),
        _ => format!("at offset {offset} of the hidden return slot"),
    };
    let within = variant
        .map(|v| format!(" (in its {v} variant)"))
        .unwrap_or_default();
    Some(Inferred {
        location,
        reason: format!(
            "field `{field}` of the returned {}{within}, {place}: what the pool really handed out",
            result.name
        ),
    })
}

/// Whether allocate returns an integer key (a slab's), and its type.
fn returned_key(signature: &Signature) -> Option<String> {
    let result = signature.returns.as_ref()?;
    match keys::result_value(result, signature).ok()?.kind {
        IdKind::Key { type_name } => Some(type_name),
        IdKind::Pointer => None,
    }
}

/// A slab-like container (allocate returns an integer key) stores one
/// value per key: the size is that value's, from DWARF.
pub fn element_size(signature: &Signature) -> Result<Option<Inferred>, String> {
    if returned_key(signature).is_none() {
        return Ok(None);
    }
    let stored = signature
        .parameters
        .iter()
        .filter(|p| p.name != "self" && !SIZE_NAMES.contains(&p.name.as_str()))
        .find(|p| p.name == "value")
        .or_else(|| signature.parameters.iter().find(|p| p.name != "self"));
    let Some(stored) = stored else {
        return Ok(None);
    };
    inferred(
        &stored.shape.size.to_string(),
        format!(
            "allocate returns an integer key, so it stores a value per key: the size of parameter `{}` ({}, {} bytes in DWARF)",
            stored.name, stored.shape.name, stored.shape.size
        ),
    )
    .map(Some)
}

/// The buffer's identity at release: the parameter of allocate's result
/// type (or the last one that is not `self`).
pub fn release_id(alloc: &Signature, release: &Signature) -> Result<Inferred, String> {
    let result = returned(alloc)?;
    let key = returned_key(alloc);
    let parameter: &Parameter = release
        .parameters
        .iter()
        .find(|p| {
            !result.name.is_empty()
                && (p.shape.name == result.name || keys::refers_to(&p.shape, &result.name))
        })
        .or_else(|| {
            let key = key.as_ref()?;
            release
                .parameters
                .iter()
                .find(|p| p.name != "self" && p.shape.name == *key)
        })
        .or_else(|| release.parameters.iter().rev().find(|p| p.name != "self"))
        .ok_or_else(|| "release takes no parameter to identify the buffer by".to_string())?;
    let pool = keys::pool_parameter(release).map(|p| &p.shape);
    if let Some(why) = keys::not_an_identity(&parameter.shape, pool) {
        return Err(format!("parameter `{}`: {why}", parameter.name));
    }
    if !result.name.is_empty() && keys::refers_to(&parameter.shape, &result.name) {
        return through_reference(parameter, result);
    }
    if parameter.shape.first_pointer().is_none() && keys::is_integer_key(&parameter.shape) {
        return release_key(parameter);
    }
    let offset = parameter.shape.first_pointer().ok_or_else(|| {
        format!(
            "parameter `{}` ({}) holds no pointer",
            parameter.name, parameter.shape.name
        )
    })?;
    let describe = |place: &str| {
        format!(
            "parameter `{}` ({}) {place}",
            parameter.name, parameter.shape.name
        )
    };
    match parameter.location {
        EntryLocation::Memory(register) => {
            let register = register_text(register);
            inferred(
                &format!("*({register}+{offset})"),
                describe(&format!(
                    "is passed by reference in {register} ({} bytes); its first pointer is at offset {offset}",
                    parameter.shape.size
                )),
            )
        }
        EntryLocation::Register(register) if offset == 0 => {
            let register = register_text(register);
            inferred(&register, describe(&format!("is in {register}")))
        }
        EntryLocation::Pair(first, second) if offset == 0 || offset == 8 => {
            let (register, which) = if offset == 0 {
                (first, "first")
            } else {
                (second, "second")
            };
            let register = register_text(register);
            inferred(
                &register,
                describe(&format!(
                    "is passed in two registers; its pointer is in the {which}, {register}"
                )),
            )
        }
        // DWARF named only the first register of a pair at a function's
        // entry: the ABI puts the second half in the next argument register.
        EntryLocation::Register(register) if offset == 8 => match next_argument(register) {
            Some(second) => inferred(
                &register_text(second),
                describe(&format!(
                    "is passed in two registers; its pointer is in the second, {}",
                    register_text(second)
                )),
            ),
            None => Err(describe(
                "has its pointer in a register DWARF does not name",
            )),
        },
        _ => Err(format!(
            "DWARF does not say where parameter `{}` is when release starts",
            parameter.name
        )),
    }
}

/// Release takes a reference to what allocate returned (`&mut Guard`):
/// the parameter's value is the address of that value (usually on the
/// caller's stack), not an identity; the identity is inside, as allocate
/// returned it.
fn through_reference(parameter: &Parameter, result: &TypeShape) -> Result<Inferred, String> {
    let offset = result.first_pointer().unwrap_or(0);
    if result.first_pointer().is_none() && !keys::is_integer_key(result) {
        return Err(format!(
            "parameter `{}` ({}) refers to a {} that holds no pointer or integer key",
            parameter.name, parameter.shape.name, result.name
        ));
    }
    let EntryLocation::Register(register) = parameter.location else {
        return Err(format!(
            "DWARF does not say where parameter `{}` is when release starts",
            parameter.name
        ));
    };
    let register = register_text(register);
    inferred(
        &format!("*({register}+{offset})"),
        format!(
            "parameter `{}` ({}) is a reference in {register}: its value is the address of the {} (an address on the caller's stack, no identity), so the id is read through it, at offset {offset} as allocate returned it",
            parameter.name, parameter.shape.name, result.name
        ),
    )
}

/// An integer key passed to release: the whole 8-byte value.
fn release_key(parameter: &Parameter) -> Result<Inferred, String> {
    let (text, place) = match parameter.location {
        EntryLocation::Register(register) | EntryLocation::Pair(register, _) => {
            let register = register_text(register);
            (register.clone(), format!("in {register}"))
        }
        EntryLocation::Halves(low, high) => {
            let [low, high] = [low, high].map(|r| crate::plan::loc::REGISTER_NAMES[usize::from(r)]);
            (
                format!("{low}:{high}"),
                format!("split over {low} (its low 4 bytes) and {high} (its high 4 bytes)"),
            )
        }
        EntryLocation::Memory(register) => {
            let register = register_text(register);
            (
                format!("*{register}"),
                format!("by reference in {register}"),
            )
        }
        EntryLocation::Unknown => {
            return Err(format!(
                "DWARF does not say where parameter `{}` is when release starts",
                parameter.name
            ))
        }
    };
    inferred(
        &text,
        format!(
            "parameter `{}` ({}) is an integer key, {place}",
            parameter.name, parameter.shape.name
        ),
    )
}

/// The buffer's identity at a release that takes a pointer to what
/// allocate returned — a guard's `Drop::drop(&mut self)`, or the
/// `drop_in_place::<Guard>` glue that runs it: the buffer's pointer inside
/// the guard (the pooled object's heap pointer, e.g. a `Vec`'s data),
/// read through the pointer, never the pointer itself, which is only
/// where the guard lives (on the stack, different for every drop).
/// `None` when no parameter points to allocate's result type.
pub fn guard_release_id(
    alloc: &Signature,
    release: &Signature,
) -> Option<Result<Inferred, String>> {
    let result = alloc.returns.as_ref()?;
    let parameter = release
        .parameters
        .iter()
        .find(|p| p.shape.points_to(&result.name))?;
    Some(through_guard(result, parameter))
}

fn through_guard(result: &TypeShape, parameter: &Parameter) -> Result<Inferred, String> {
    let offset = result.buffer_pointer().ok_or_else(|| {
        format!(
            "parameter {} points to a {} that holds no pointer to identify a buffer by",
            parameter_label(parameter),
            result.name
        )
    })?;
    let pointer = match parameter.location {
        EntryLocation::Register(register) => register_text(register),
        EntryLocation::Memory(register) => format!("*{}", register_text(register)),
        _ => {
            return Err(format!(
            "DWARF does not say where parameter `{}` (a pointer to the {}) is when release starts",
            parameter.name, result.name
        ))
        }
    };
    let location = match offset {
        0 => format!("*{pointer}"),
        offset => format!("*({pointer}+{offset})"),
    };
    inferred(
        &location,
        format!(
            "parameter {} points to the {} allocate returned (in {pointer}); the buffer's \
             pointer inside it is at offset {offset}",
            parameter_label(parameter),
            result.name
        ),
    )
}

/// Why an inferred release identity cannot identify a buffer, if it
/// cannot: it is a parameter that points to a value of a named type (a
/// guard passed to its `Drop` impl or `drop_in_place` glue), so it is the
/// address where that value lives — a stack slot, different at every
/// drop — rather than the buffer inside it. Not when it is the very
/// pointer type allocate returns (`struct buf *buf_get(void)` and
/// `buf_put(struct buf *)`: the pointer handed back), given `alloc`.
pub fn address_not_identity(
    alloc: Option<&Signature>,
    release: &Signature,
    location: &Location,
) -> Option<String> {
    let text = location.to_string();
    let parameter = release
        .parameters
        .iter()
        .find(|p| matches!(p.location, EntryLocation::Register(r) if register_text(r) == text))?;
    let shape = &parameter.shape;
    if shape.kind != crate::resolve::signature::TypeKind::Pointer || points_to_bytes(shape) {
        return None;
    }
    let returned = alloc.and_then(|alloc| alloc.returns.as_ref());
    if returned.is_some_and(|r| r.kind == shape.kind && !r.name.is_empty() && r.name == shape.name)
    {
        return None;
    }
    Some(format!(
        "{text} is parameter {} ({}), the address where that value lives (a guard's stack \
         slot, different at every drop), not the buffer inside it: name the allocate whose \
         result it points to (--alloc; in inspect, before it) and auto reads the buffer \
         pointer inside, or write \
         --release-id '*({text}+K)' with the buffer pointer's offset K",
        parameter_label(parameter),
        shape.name
    ))
}

/// A parameter as explanations name it (drop glue's is unnamed).
fn parameter_label(parameter: &Parameter) -> String {
    if parameter.name.is_empty() {
        "(unnamed)".to_string()
    } else {
        format!("`{}`", parameter.name)
    }
}

/// A pointer to raw bytes (`*mut u8`, `&[u8]`, `*const c_void`, C's
/// `void *` and `char *`): itself a buffer's address.
fn points_to_bytes(shape: &TypeShape) -> bool {
    [
        "u8",
        "i8",
        "[u8]",
        "c_void",
        "core::ffi::c_void",
        "()",
        "void",
        "char",
        "unsigned char",
        "signed char",
    ]
    .iter()
    .any(|bytes| shape.points_to(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::signature::{Field, TypeKind};

    fn scalar(name: &str) -> TypeShape {
        TypeShape {
            name: name.into(),
            size: 8,
            kind: TypeKind::Scalar,
        }
    }

    fn pointer() -> TypeShape {
        TypeShape {
            name: "*mut u8".into(),
            size: 8,
            kind: TypeKind::Pointer,
        }
    }

    fn pooled_buf() -> TypeShape {
        let field = |name: &str, offset, shape| Field {
            name: name.into(),
            offset,
            shape,
        };
        TypeShape {
            name: "PooledBuf".into(),
            size: 24,
            kind: TypeKind::Struct(vec![
                field(
                    "ptr",
                    0,
                    TypeShape {
                        name: "NonNull<u8>".into(),
                        size: 8,
                        kind: TypeKind::Struct(vec![field("pointer", 0, pointer())]),
                    },
                ),
                field("capacity", 8, scalar("usize")),
                field("len", 16, scalar("usize")),
            ]),
        }
    }

    fn parameter(name: &str, shape: TypeShape, location: EntryLocation) -> Parameter {
        Parameter {
            name: name.into(),
            shape,
            location,
        }
    }

    fn gateway_pool() -> (Signature, Signature) {
        let allocate = Signature {
            parameters: vec![
                parameter("self", pointer(), EntryLocation::Register(4)),
                parameter("size", scalar("usize"), EntryLocation::Register(1)),
            ],
            returns: Some(pooled_buf()),
        };
        let release = Signature {
            parameters: vec![
                parameter("self", pointer(), EntryLocation::Register(5)),
                parameter("buf", pooled_buf(), EntryLocation::Memory(4)),
            ],
            returns: None,
        };
        (allocate, release)
    }

    #[test]
    fn the_gateway_pool_as_the_readme_works_it_out() {
        let (allocate, release) = gateway_pool();
        assert_eq!(alloc_id(&allocate).unwrap().location.to_string(), "*arg0");
        assert_eq!(size(&allocate).unwrap().location.to_string(), "*(arg0+8)");
        assert_eq!(
            release_id(&allocate, &release)
                .unwrap()
                .location
                .to_string(),
            "*arg1"
        );
    }

    #[test]
    fn boxed_values_come_back_in_rax() {
        let boxed = boxed_chat();
        let take = Signature {
            parameters: vec![parameter("self", pointer(), EntryLocation::Register(0))],
            returns: Some(boxed.clone()),
        };
        let give_back = Signature {
            parameters: vec![
                parameter("self", pointer(), EntryLocation::Register(5)),
                parameter("value", boxed, EntryLocation::Register(4)),
            ],
            returns: None,
        };
        assert_eq!(alloc_id(&take).unwrap().location.to_string(), "ret");
        assert_eq!(
            release_id(&take, &give_back).unwrap().location.to_string(),
            "arg1"
        );
        assert!(size(&take).unwrap_err().contains("named like a size"));
        // Inlined into a caller, the value may sit in any register.
        let inlined = Signature {
            parameters: vec![parameter("value", boxed_chat(), EntryLocation::Register(3))],
            returns: None,
        };
        assert_eq!(
            release_id(&take, &inlined).unwrap().location.to_string(),
            "rbx"
        );
    }

    fn boxed_chat() -> TypeShape {
        TypeShape {
            name: "Box<Chat>".into(),
            size: 8,
            kind: TypeKind::Struct(vec![Field {
                name: "pointer".into(),
                offset: 0,
                shape: pointer(),
            }]),
        }
    }

    #[test]
    fn explains_what_cannot_be_inferred() {
        let nothing = Signature {
            parameters: vec![],
            returns: None,
        };
        assert!(alloc_id(&nothing).unwrap_err().contains("returns nothing"));
        let pair = Signature {
            parameters: vec![],
            returns: Some(TypeShape {
                name: "(usize, *mut u8)".into(),
                size: 16,
                kind: TypeKind::Struct(vec![
                    Field {
                        name: "0".into(),
                        offset: 0,
                        shape: scalar("usize"),
                    },
                    Field {
                        name: "1".into(),
                        offset: 8,
                        shape: pointer(),
                    },
                ]),
            }),
        };
        // Its pointer comes back in rdx: `ret.1`.
        assert_eq!(alloc_id(&pair).unwrap().location.to_string(), "ret.1");
    }
}
