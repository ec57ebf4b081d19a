//! Identities that are not plain pointers: the success variant of an enum
//! result (`Option<usize>`, `Result<K, E>`), integer keys that are unique
//! only within their pool, and values that cannot identify a buffer at all
//! (a bool, a borrow of the pool itself). Used by `auto` ([`super::infer`]).

use observer_ebpf::{test_op, ReturnTest};

use super::loc::Location;
use crate::resolve::signature::{EnumShape, Field, Signature, TypeKind, TypeShape, Variant};

/// What an allocation's id is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdKind {
    /// A pointer: unique in the process on its own.
    Pointer,
    /// An integer key (`usize`, a key struct without pointers): unique only
    /// within the pool that handed it out.
    Key { type_name: String },
}

/// The value an allocate returns that identifies the buffer: where it is
/// in the result, what it is, and which returns carry one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultValue {
    /// Byte offset of the id in the result.
    pub offset: u64,
    pub kind: IdKind,
    /// For an enum result: the variant that is an allocation.
    pub success: Option<Success>,
}

/// The success variant of an enum result and how to tell it apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    pub variant: String,
    /// Offset and size of the discriminant in the result.
    pub discriminant: (u64, u64),
    /// An allocation when the discriminant equals this value (`true`), or
    /// differs from it (`false`: the success variant is the niche enum's
    /// data variant, which has every value the other one does not).
    pub equal: bool,
    pub value: u64,
}

impl Success {
    /// The test the kernel evaluates on a result of `result_size` bytes.
    pub fn compile(&self, result_size: u64) -> Result<ReturnTest, String> {
        let (offset, size) = self.discriminant;
        let (location, shift) = value_at(result_size, offset, size)?;
        let mask = match size {
            8 => u64::MAX,
            1 | 2 | 4 => (1u64 << (8 * size)) - 1,
            _ => return Err(format!("a {size}-byte discriminant cannot be tested")),
        };
        Ok(ReturnTest {
            loc: location.compiled(),
            mask,
            value: self.value,
            shift,
            op: if self.equal {
                test_op::EQUAL
            } else {
                test_op::NOT_EQUAL
            },
        })
    }

    /// The test in words, for the report.
    pub fn describe(&self, result: &TypeShape) -> String {
        let (offset, size) = self.discriminant;
        let comparison = if self.equal { "is" } else { "is not" };
        format!(
            "only {} returns are allocations: the {size}-byte discriminant at offset {offset} of {} {comparison} {}",
            self.variant, result.name, self.value
        )
    }
}

/// Where the bytes `offset..offset+size` of a result of `result_size` bytes
/// are when the function returns, and the shift that brings them down:
/// in the two return registers (rax:rdx, x0:x1) for results up to 16 bytes,
/// else in the hidden return slot whose address was in the register
/// `arch::HIDDEN_RESULT` names at entry.
pub fn value_at(result_size: u64, offset: u64, size: u64) -> Result<(Location, u32), String> {
    if result_size > 16 {
        let base = crate::arch::HIDDEN_RESULT;
        let location =
            Location::parse(&format!("*({base}+{offset})")).map_err(|e| e.to_string())?;
        return Ok((location, 0));
    }
    let register = offset / 8;
    if (offset % 8) + size > 8 || register > 1 {
        return Err(format!(
            "bytes {offset}..{} straddle the result's registers",
            offset + size
        ));
    }
    let text = if register == 0 { "ret" } else { "ret.1" };
    let location = Location::parse(text).map_err(|e| e.to_string())?;
    Ok((location, (8 * (offset % 8)) as u32))
}

/// Why a value of this type cannot be a buffer's identity, if it cannot.
/// `pool` is the type of allocate's `self`, when it has one.
pub fn not_an_identity(value: &TypeShape, pool: Option<&TypeShape>) -> Option<String> {
    let name = value.name.as_str();
    match name {
        "bool" => {
            return Some(format!(
                "{name} has two values, so it cannot tell buffers apart"
            ))
        }
        "()" => return Some("() carries nothing to tell buffers apart".into()),
        "char" | "f32" | "f64" => return Some(format!("{name} is not a key or a pointer")),
        _ => {}
    }
    if let Some(pool) = pool {
        // A reference of the very type of `self` (`&Pool`): Rust names
        // references `&T`; raw pointers may well point elsewhere.
        if value.kind == TypeKind::Pointer && name.starts_with('&') && name == pool.name {
            return Some(format!(
                "{name} is a borrow of the pool itself (`self`), the same for every allocation"
            ));
        }
    }
    None
}

/// The identity in what allocate returns: for an enum, the payload of its
/// success variant (`Some`, `Ok`), tested in the kernel; else the value.
pub fn result_value(result: &TypeShape, signature: &Signature) -> Result<ResultValue, String> {
    let pool = pool_parameter(signature).map(|p| &p.shape);
    if let Some(why) = not_an_identity(result, pool) {
        return Err(why);
    }
    match &result.kind {
        TypeKind::Enum(shape) => enum_value(result, shape, pool),
        _ => identity_in(result, 0, pool),
    }
}

/// The payload of an `Option`/`Result`'s success variant: its offset in
/// the result, its shape and the variant's name.
pub fn success_payload(result: &TypeShape) -> Option<(u64, &TypeShape, &str)> {
    let TypeKind::Enum(shape) = &result.kind else {
        return None;
    };
    let (success, _) = success_and_failure(result, shape).ok()?;
    let payload = success.fields.first()?;
    Some((payload.offset, &payload.shape, success.name.as_str()))
}

/// allocate's or release's `self`: the pool instance.
pub fn pool_parameter(signature: &Signature) -> Option<&crate::resolve::signature::Parameter> {
    signature.parameters.iter().find(|p| p.name == "self")
}

fn enum_value(
    result: &TypeShape,
    shape: &EnumShape,
    pool: Option<&TypeShape>,
) -> Result<ResultValue, String> {
    let (success, failure) = success_and_failure(result, shape)?;
    let discriminant = shape
        .discriminant
        .ok_or_else(|| format!("DWARF does not say where {}'s discriminant is", result.name))?;
    let test = match (success.discriminant, failure.discriminant) {
        (Some(value), _) => Success {
            variant: success.name.clone(),
            discriminant,
            equal: true,
            value,
        },
        (None, Some(value)) => Success {
            variant: success.name.clone(),
            discriminant,
            equal: false,
            value,
        },
        (None, None) => {
            return Err(format!(
                "DWARF gives neither of {}'s variants a discriminant value",
                result.name
            ))
        }
    };
    let payload = success.fields.first().ok_or_else(|| {
        format!(
            "{}'s {} variant holds nothing to identify a buffer by",
            result.name, success.name
        )
    })?;
    if let Some(why) = not_an_identity(&payload.shape, pool) {
        return Err(format!("{}'s {} holds {why}", result.name, success.name));
    }
    let mut value = identity_in(&payload.shape, payload.offset, pool)
        .map_err(|why| format!("{}'s {} variant: {why}", result.name, success.name))?;
    value.success = Some(test);
    Ok(value)
}

/// `Some`/`None` or `Ok`/`Err`: the variant that is an allocation and the
/// one that is not. Other enums are refused: which variant allocated is a
/// guess.
fn success_and_failure<'a>(
    result: &TypeShape,
    shape: &'a EnumShape,
) -> Result<(&'a Variant, &'a Variant), String> {
    let find = |name: &str| shape.variants.iter().find(|v| v.name == name);
    let pair = match (find("Some"), find("None"), find("Ok"), find("Err")) {
        (Some(success), Some(failure), _, _) | (_, _, Some(success), Some(failure)) => {
            Some((success, failure))
        }
        _ => None,
    };
    match pair {
        Some(pair) if shape.variants.len() == 2 => Ok(pair),
        _ => Err(format!(
            "{} is an enum other than Option or Result (variants {}), so which of its returns are allocations is not known",
            result.name,
            shape
                .variants
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The id inside a value at `base` in the result: its first pointer, else
/// the value itself when it is an 8-byte integer key.
fn identity_in(
    value: &TypeShape,
    base: u64,
    pool: Option<&TypeShape>,
) -> Result<ResultValue, String> {
    if let Some(offset) = first_owned_pointer(value, pool) {
        return Ok(ResultValue {
            offset: base + offset,
            kind: IdKind::Pointer,
            success: None,
        });
    }
    if let Some(pointer) = pool_borrow(value, pool) {
        return Err(format!(
            "its only pointer, `{}` ({}), is a borrow of the pool itself, the same for every allocation",
            pointer.name, pointer.shape.name
        ));
    }
    if is_integer_key(value) {
        return Ok(ResultValue {
            offset: base,
            kind: IdKind::Key {
                type_name: value.name.clone(),
            },
            success: None,
        });
    }
    Err(format!(
        "{} ({} bytes) holds no pointer and is not an 8-byte integer key",
        value.name, value.size
    ))
}

/// An integer, or a struct of integers, of exactly 8 bytes: ids are 64
/// bits read whole.
pub fn is_integer_key(value: &TypeShape) -> bool {
    value.size == 8
        && match &value.kind {
            TypeKind::Scalar => !matches!(value.name.as_str(), "bool" | "char" | "f32" | "f64"),
            TypeKind::Struct(fields) => fields.iter().all(|f| {
                matches!(f.shape.kind, TypeKind::Scalar | TypeKind::Struct(_))
                    && f.shape.first_pointer().is_none()
                    && not_an_identity(&f.shape, None).is_none()
            }),
            _ => false,
        }
}

/// The first pointer that is not a borrow of the pool.
fn first_owned_pointer(value: &TypeShape, pool: Option<&TypeShape>) -> Option<u64> {
    if pool_borrow(value, pool).is_none() {
        return value.first_pointer();
    }
    let TypeKind::Struct(fields) = &value.kind else {
        return None;
    };
    fields
        .iter()
        .filter(|f| not_an_identity(&f.shape, pool).is_none())
        .find_map(|f| f.shape.first_pointer().map(|o| f.offset + o))
}

/// A field of `value` that borrows the pool (a guard's `&Pool`).
fn pool_borrow<'a>(value: &'a TypeShape, pool: Option<&TypeShape>) -> Option<&'a Field> {
    let TypeKind::Struct(fields) = &value.kind else {
        return None;
    };
    fields
        .iter()
        .find(|f| not_an_identity(&f.shape, pool).is_some() && f.shape.kind == TypeKind::Pointer)
}

/// Whether `value` is a reference (`&T`, `&mut T`) to a type named
/// `target`: DWARF names references by the referent's path, structs by
/// their bare name, so the path's last segment is compared.
pub fn refers_to(value: &TypeShape, target: &str) -> bool {
    if value.kind != TypeKind::Pointer {
        return false;
    }
    let Some(referent) = referent(&value.name) else {
        return false;
    };
    referent == target
        || referent
            .strip_suffix(target)
            .is_some_and(|path| path.ends_with("::"))
}

/// What an integer key is unique within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolScope {
    /// The pool instance: its address, found at this location (allocate's
    /// `self` at entry).
    Instance(Location),
    /// The pool's type (`slab::Slab<app::Job>`), when no instance can be
    /// found: an allocate inlined into its callers, whose `self` DWARF
    /// leaves without a location. Two pools of one type share keys then.
    Type(String),
}

impl PoolScope {
    /// The value the kernel keys a buffer by, next to its id.
    pub fn location(&self) -> Location {
        match self {
            Self::Instance(location) => *location,
            Self::Type(name) => Location::literal(type_tag(name)),
        }
    }
}

/// A number standing for a pool type, the same wherever the type is named
/// the same (FNV-1a of the name): allocate and release compute it apart.
/// 48 bits, never 0 (0 means "no scope"), so it prints as a short literal.
pub fn type_tag(type_name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in type_name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash & 0xffff_ffff_ffff) | 1
}

/// The pool type a function's `self` refers to (`&mut Slab<T>` → `Slab<T>`).
pub fn pool_type(signature: &Signature) -> Option<String> {
    let name = pool_parameter(signature)?.shape.name.as_str();
    Some(referent(name).unwrap_or(name).to_string())
}

/// What a reference type's name refers to: `&T` and `&mut T` → `T`.
fn referent(name: &str) -> Option<&str> {
    let referent = name.strip_prefix('&')?;
    Some(referent.strip_prefix("mut ").unwrap_or(referent))
}

/// The scope of an integer key in words, for the report.
pub fn scope_text(type_name: &str, scope: &PoolScope) -> String {
    match scope {
        PoolScope::Instance(location) => {
            format!("integer key ({type_name}) scoped to the pool at {location}")
        }
        PoolScope::Type(pool) => format!(
            "integer key ({type_name}) scoped to the pool's type {pool} (tag {}): DWARF has no \
             location for the inlined allocate's `self`, so two pools of this type in one \
             process would share keys (a key handed out again while live counts as a \
             reallocated id)",
            type_tag(pool)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::infer::{alloc_identity, release_id, release_scope, size};
    use crate::resolve::signature::{EntryLocation, Parameter};

    fn scalar(name: &str, size: u64) -> TypeShape {
        TypeShape {
            name: name.into(),
            size,
            kind: TypeKind::Scalar,
        }
    }

    fn field(name: &str, offset: u64, shape: TypeShape) -> Field {
        Field {
            name: name.into(),
            offset,
            shape,
        }
    }

    fn pool_ref() -> TypeShape {
        TypeShape {
            name: "&app::Pool".into(),
            size: 8,
            kind: TypeKind::Pointer,
        }
    }

    fn parameter(name: &str, shape: TypeShape, location: EntryLocation) -> Parameter {
        Parameter {
            name: name.into(),
            shape,
            location,
        }
    }

    /// `Option<usize>` as rustc describes it: a u64 tag at 0, `Some`'s
    /// `__0` at 8.
    fn option_usize() -> TypeShape {
        option("Option<usize>", 16, Some(1), 8, scalar("usize", 8))
    }

    /// `Option<T>` whose `None` is the 0 niche of its payload's first
    /// word: `Some` has no discriminant value of its own.
    fn niche_option(name: &str, size: u64, payload: TypeShape) -> TypeShape {
        option(name, size, None, 0, payload)
    }

    /// An `Option` with its tag (or niche) in the first word, `None` 0,
    /// and `Some`'s discriminant value and payload at `at`.
    fn option(name: &str, size: u64, some: Option<u64>, at: u64, payload: TypeShape) -> TypeShape {
        TypeShape {
            name: name.into(),
            size,
            kind: TypeKind::Enum(EnumShape {
                discriminant: Some((0, 8)),
                variants: vec![
                    Variant {
                        name: "None".into(),
                        discriminant: Some(0),
                        fields: vec![],
                    },
                    Variant {
                        name: "Some".into(),
                        discriminant: some,
                        fields: vec![field("__0", at, payload)],
                    },
                ],
            }),
        }
    }

    fn insert(returns: TypeShape) -> Signature {
        Signature {
            parameters: vec![
                parameter("self", pool_ref(), EntryLocation::Register(5)),
                parameter(
                    "value",
                    TypeShape {
                        name: "Session".into(),
                        size: 48,
                        kind: TypeKind::Struct(vec![]),
                    },
                    EntryLocation::Memory(4),
                ),
            ],
            returns: Some(returns),
        }
    }

    #[test]
    fn an_option_key_is_in_rdx_and_only_some_allocates() {
        let signature = insert(option_usize());
        let identity = alloc_identity(&signature).unwrap();
        assert_eq!(identity.id.location.to_string(), "ret.1");
        let (test, text) = identity.success.unwrap();
        assert_eq!(Location::parse("ret").unwrap().compiled(), test.loc);
        assert_eq!(
            (test.op, test.value, test.mask, test.shift),
            (test_op::EQUAL, 1, u64::MAX, 0)
        );
        assert!(
            text.starts_with("only Some returns are allocations"),
            "{text}"
        );
        let key = identity.key.unwrap();
        assert_eq!(
            key.describe(),
            "integer key (usize) scoped to the pool at arg0"
        );
        let size = size(&signature).unwrap();
        assert_eq!(size.location.to_string(), "48");
        assert!(
            size.reason.contains("parameter `value` (Session, 48 bytes"),
            "{}",
            size.reason
        );
    }

    #[test]
    fn release_finds_the_key_and_its_pool() {
        let remove = Signature {
            parameters: vec![
                parameter("self", pool_ref(), EntryLocation::Register(4)),
                parameter("key", scalar("usize", 8), EntryLocation::Register(1)),
                parameter("reuse", scalar("bool", 1), EntryLocation::Register(2)),
            ],
            returns: Some(scalar("bool", 1)),
        };
        let alloc = insert(option_usize());
        assert_eq!(
            release_id(&alloc, &remove).unwrap().location.to_string(),
            "arg2"
        );
        assert_eq!(release_scope(&remove).unwrap().to_string(), "arg1");
        // Without the key's type to go by, the last parameter is a bool.
        let unknown = insert(scalar("u64", 8));
        let by_name = Signature {
            parameters: remove.parameters.clone(),
            returns: None,
        };
        assert_eq!(
            release_id(&unknown, &by_name).unwrap_err(),
            "parameter `reuse`: bool has two values, so it cannot tell buffers apart"
        );
        // The bool result of remove is no identity either.
        assert!(alloc_identity(&remove)
            .unwrap_err()
            .contains("bool has two values"));
    }

    #[test]
    fn a_result_in_the_return_slot_and_a_niche_option() {
        // Result<Key, Error> of 24 bytes: tag byte at 16, key at 0.
        let result = TypeShape {
            name: "Result<Key, Error>".into(),
            size: 24,
            kind: TypeKind::Enum(EnumShape {
                discriminant: Some((16, 1)),
                variants: vec![
                    Variant {
                        name: "Ok".into(),
                        discriminant: Some(0),
                        fields: vec![field(
                            "__0",
                            0,
                            TypeShape {
                                name: "Key".into(),
                                size: 8,
                                kind: TypeKind::Struct(vec![
                                    field("idx", 0, scalar("u32", 4)),
                                    field("version", 4, scalar("u32", 4)),
                                ]),
                            },
                        )],
                    },
                    Variant {
                        name: "Err".into(),
                        discriminant: Some(1),
                        fields: vec![field("__0", 0, scalar("u64", 8))],
                    },
                ],
            }),
        };
        let identity = alloc_identity(&insert(result)).unwrap();
        // Over 16 bytes: read through the hidden slot's address saved at
        // entry (x86-64: arg0; arm64: x8@entry).
        let slot = crate::arch::HIDDEN_RESULT;
        assert_eq!(identity.id.location.to_string(), format!("*{slot}"));
        let (test, _) = identity.success.unwrap();
        let discriminant = Location::parse(&format!("*({slot}+16)")).unwrap();
        assert_eq!(test.loc, discriminant.compiled());
        assert_eq!(test.loc.base, observer_ebpf::LOC_BASE_RESULT_SLOT);
        assert_eq!((test.op, test.value, test.mask), (test_op::EQUAL, 0, 0xff));
        assert_eq!(identity.key.unwrap().type_name, "Key");

        // Option<Box<T>>: None is the null pointer; Some has no value of
        // its own, so it is "not 0".
        let boxed = niche_option(
            "Option<Box<T>>",
            8,
            TypeShape {
                name: "*mut T".into(),
                size: 8,
                kind: TypeKind::Pointer,
            },
        );
        let identity = alloc_identity(&insert(boxed)).unwrap();
        assert_eq!(identity.id.location.to_string(), "ret");
        assert_eq!(identity.key, None);
        let (test, _) = identity.success.unwrap();
        assert_eq!((test.op, test.value), (test_op::NOT_EQUAL, 0));
    }

    #[test]
    fn discriminants_inside_a_register_are_shifted_out() {
        let test = Success {
            variant: "Some".into(),
            discriminant: (12, 1),
            equal: true,
            value: 3,
        }
        .compile(16)
        .unwrap();
        assert_eq!(test.loc, Location::parse("ret.1").unwrap().compiled());
        assert_eq!((test.shift, test.mask), (32, 0xff));
    }

    #[test]
    fn what_cannot_be_an_identity_is_refused_with_the_reason() {
        let guard = TypeShape {
            name: "Guard".into(),
            size: 8,
            kind: TypeKind::Struct(vec![field("pool", 0, pool_ref())]),
        };
        let err = alloc_identity(&insert(guard)).unwrap_err();
        assert!(err.contains("borrow of the pool itself"), "{err}");
        let err = alloc_identity(&insert(pool_ref())).unwrap_err();
        assert!(err.contains("borrow of the pool itself"), "{err}");
        let err = alloc_identity(&insert(scalar("u32", 4))).unwrap_err();
        assert!(err.contains("not an 8-byte integer key"), "{err}");
        let err = alloc_identity(&insert(scalar("f64", 8))).unwrap_err();
        assert!(err.contains("not a key or a pointer"), "{err}");
        // A guard with the pool's borrow and its slot's pointer: the slot.
        let slot_guard = TypeShape {
            name: "SlotGuard".into(),
            size: 16,
            kind: TypeKind::Struct(vec![
                field("pool", 0, pool_ref()),
                field(
                    "slot",
                    8,
                    TypeShape {
                        name: "*mut Slot".into(),
                        size: 8,
                        kind: TypeKind::Pointer,
                    },
                ),
            ]),
        };
        let identity = alloc_identity(&insert(slot_guard)).unwrap();
        assert_eq!(identity.id.location.to_string(), "ret.1");
        assert_eq!(identity.key, None);
        // An enum that is neither Option nor Result.
        let mut other = option_usize();
        if let TypeKind::Enum(shape) = &mut other.kind {
            shape.variants[0].name = "Empty".into();
        }
        let err = alloc_identity(&insert(other)).unwrap_err();
        assert!(err.contains("an enum other than Option or Result"), "{err}");
    }

    #[test]
    fn a_guard_released_by_reference_is_read_through_it() {
        let guard = TypeShape {
            name: "Guard".into(),
            size: 16,
            kind: TypeKind::Struct(vec![
                field("len", 0, scalar("usize", 8)),
                field(
                    "ptr",
                    8,
                    TypeShape {
                        name: "*mut u8".into(),
                        size: 8,
                        kind: TypeKind::Pointer,
                    },
                ),
            ]),
        };
        let reference = TypeShape {
            name: "&mut app::pool::Guard".into(),
            size: 8,
            kind: TypeKind::Pointer,
        };
        assert!(refers_to(&reference, "Guard"));
        assert!(!refers_to(&reference, "ard"));
        let put_back = Signature {
            parameters: vec![
                parameter("self", pool_ref(), EntryLocation::Register(5)),
                parameter("guard", reference, EntryLocation::Register(4)),
            ],
            returns: None,
        };
        let found = release_id(&insert(guard), &put_back).unwrap();
        assert_eq!(found.location.to_string(), "*(arg1+8)");
        assert!(
            found.reason.contains("address on the caller's stack"),
            "{}",
            found.reason
        );
    }

    #[test]
    fn a_capacity_inside_the_success_variant_or_rdx_is_the_size() {
        let data = TypeShape {
            name: "*mut u8".into(),
            size: 8,
            kind: TypeKind::Pointer,
        };
        let buf = TypeShape {
            name: "Buf".into(),
            size: 16,
            kind: TypeKind::Struct(vec![
                field("ptr", 0, data.clone()),
                field("capacity", 8, scalar("usize", 8)),
            ]),
        };
        // Returned as is: ptr in rax, capacity in rdx.
        let found = size(&insert(buf.clone())).unwrap();
        assert_eq!(found.location.to_string(), "ret.1");
        assert!(
            found.reason.contains("field `capacity`"),
            "{}",
            found.reason
        );
        // Option<Buf> (a niche on ptr, 16 bytes): the same registers.
        let option = niche_option("Option<Buf>", 16, buf);
        let signature = insert(option);
        let found = size(&signature).unwrap();
        assert_eq!(found.location.to_string(), "ret.1");
        assert!(
            found.reason.contains("(in its Some variant)"),
            "{}",
            found.reason
        );
        let identity = alloc_identity(&signature).unwrap();
        assert_eq!(identity.id.location.to_string(), "ret");
        assert_eq!(identity.key, None);
        assert_eq!(identity.success.unwrap().0.op, test_op::NOT_EQUAL);
    }

    #[test]
    fn a_plain_usize_key_without_self_is_unscoped() {
        let signature = Signature {
            parameters: vec![],
            returns: Some(scalar("usize", 8)),
        };
        let identity = alloc_identity(&signature).unwrap();
        assert_eq!(identity.id.location.to_string(), "ret");
        assert_eq!(identity.success, None);
        assert_eq!(
            identity.key.unwrap().describe(),
            "integer key (usize), unscoped: allocate has no `self`"
        );
    }
}
