//! The element types a checkpoint file may hold (f32, bf16, f16) and conversions between their
//! little-endian bytes, f32 and bf16. Everything works on slices so callers can convert a tensor
//! in chunks through a reused buffer and never hold two full copies of it.

use half::{bf16, f16};
use solar_engine::DType;

/// A float type stored in a checkpoint. Other safetensors dtypes are refused when a file opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SafeDType {
    F32,
    BF16,
    F16,
}

impl SafeDType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            SafeDType::F32 => 4,
            SafeDType::BF16 | SafeDType::F16 => 2,
        }
    }

    /// The dtype as transformers writes it in config.json (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            SafeDType::F32 => "float32",
            SafeDType::BF16 => "bfloat16",
            SafeDType::F16 => "float16",
        }
    }

    /// Parses a dtype as users write it: f32/float32, bf16/bfloat16, f16/float16/half.
    pub fn parse(text: &str) -> Option<SafeDType> {
        match text.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Some(SafeDType::F32),
            "bf16" | "bfloat16" => Some(SafeDType::BF16),
            "f16" | "float16" | "half" | "fp16" => Some(SafeDType::F16),
            _ => None,
        }
    }

    pub fn from_safetensors(d: safetensors::Dtype) -> Option<SafeDType> {
        match d {
            safetensors::Dtype::F32 => Some(SafeDType::F32),
            safetensors::Dtype::BF16 => Some(SafeDType::BF16),
            safetensors::Dtype::F16 => Some(SafeDType::F16),
            _ => None,
        }
    }

    pub fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            SafeDType::F32 => safetensors::Dtype::F32,
            SafeDType::BF16 => safetensors::Dtype::BF16,
            SafeDType::F16 => safetensors::Dtype::F16,
        }
    }

    /// The engine dtype holding these values without loss, if there is one (f16 has none).
    pub fn engine_dtype(self) -> Option<DType> {
        match self {
            SafeDType::F32 => Some(DType::F32),
            SafeDType::BF16 => Some(DType::BF16),
            SafeDType::F16 => None,
        }
    }
}

impl std::fmt::Display for SafeDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SafeDType::F32 => "F32",
            SafeDType::BF16 => "BF16",
            SafeDType::F16 => "F16",
        })
    }
}

/// Calls `f` with each element of `bytes` (little-endian `src` values) widened to f32, which is
/// exact for all three types. A trailing partial element is ignored; callers check lengths.
fn for_each_f32(src: SafeDType, bytes: &[u8], mut f: impl FnMut(f32)) {
    match src {
        SafeDType::F32 => bytes.chunks_exact(4).for_each(|c| f(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        SafeDType::BF16 => bytes.chunks_exact(2).for_each(|c| f(bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        SafeDType::F16 => bytes.chunks_exact(2).for_each(|c| f(f16::from_le_bytes([c[0], c[1]]).to_f32())),
    }
}

/// Appends `bytes` (`src` values) to `out` as `dst` values. Narrowing rounds to nearest even.
pub fn convert_bytes(src: SafeDType, bytes: &[u8], dst: SafeDType, out: &mut Vec<u8>) {
    if src == dst {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len() / src.size_in_bytes() * dst.size_in_bytes());
    match dst {
        SafeDType::F32 => for_each_f32(src, bytes, |x| out.extend_from_slice(&x.to_le_bytes())),
        SafeDType::BF16 => {
            for_each_f32(src, bytes, |x| out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()))
        }
        SafeDType::F16 => {
            for_each_f32(src, bytes, |x| out.extend_from_slice(&f16::from_f32(x).to_le_bytes()))
        }
    }
}

/// Appends `bytes` (`src` values) to `out` as f32.
pub fn decode_f32(src: SafeDType, bytes: &[u8], out: &mut Vec<f32>) {
    out.reserve(bytes.len() / src.size_in_bytes());
    for_each_f32(src, bytes, |x| out.push(x));
}

/// Appends `bytes` (`src` values) to `out` as bf16 (f32 and f16 round to nearest even).
pub fn decode_bf16(src: SafeDType, bytes: &[u8], out: &mut Vec<bf16>) {
    out.reserve(bytes.len() / src.size_in_bytes());
    match src {
        SafeDType::BF16 => bytes.chunks_exact(2).for_each(|c| out.push(bf16::from_le_bytes([c[0], c[1]]))),
        _ => for_each_f32(src, bytes, |x| out.push(bf16::from_f32(x))),
    }
}

/// Appends f32 values to `out` as `dst` bytes.
pub fn encode_f32(data: &[f32], dst: SafeDType, out: &mut Vec<u8>) {
    out.reserve(data.len() * dst.size_in_bytes());
    match dst {
        SafeDType::F32 => data.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        SafeDType::BF16 => data.iter().for_each(|&x| out.extend_from_slice(&bf16::from_f32(x).to_le_bytes())),
        SafeDType::F16 => data.iter().for_each(|&x| out.extend_from_slice(&f16::from_f32(x).to_le_bytes())),
    }
}

/// Appends bf16 values to `out` as `dst` bytes (widening is exact; f16 rounds to nearest even).
pub fn encode_bf16(data: &[bf16], dst: SafeDType, out: &mut Vec<u8>) {
    out.reserve(data.len() * dst.size_in_bytes());
    match dst {
        SafeDType::BF16 => data.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        SafeDType::F32 => data.iter().for_each(|x| out.extend_from_slice(&x.to_f32().to_le_bytes())),
        SafeDType::F16 => {
            data.iter().for_each(|x| out.extend_from_slice(&f16::from_f32(x.to_f32()).to_le_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between bf16 1.0 and 1 + 2^-7: ties go to the even mantissa (1.0).
        let halfway = 1.0f32 + 2f32.powi(-8);
        let mut out = Vec::new();
        encode_f32(&[halfway, 1.0 + 3.0 * 2f32.powi(-8)], SafeDType::BF16, &mut out);
        let mut back = Vec::new();
        decode_f32(SafeDType::BF16, &out, &mut back);
        assert_eq!(back, vec![1.0, 1.0 + 2.0 * 2f32.powi(-7)]);
    }

    #[test]
    fn conversions_agree_with_each_other() {
        let data = [0.0f32, -1.5, 3.25e-3, 65504.0, 1e-8, f32::INFINITY];
        for dst in [SafeDType::F32, SafeDType::BF16, SafeDType::F16] {
            let mut direct = Vec::new();
            encode_f32(&data, dst, &mut direct);
            let mut f32_bytes = Vec::new();
            encode_f32(&data, SafeDType::F32, &mut f32_bytes);
            let mut via_bytes = Vec::new();
            convert_bytes(SafeDType::F32, &f32_bytes, dst, &mut via_bytes);
            assert_eq!(direct, via_bytes, "{dst}");
        }
    }
}
