// The safetensors checkpoint format (https://github.com/huggingface/safetensors), format level
// only: named tensors to bytes and back, plus the atomic file writer that checkpoints are saved
// with.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the raw
// little-endian tensor data. The header maps each name to
//   {"dtype": "F32" | "I64", "shape": [...], "data_offsets": [begin, end]}
// with offsets relative to the start of the data section, plus an optional "__metadata__" object
// of strings. Files written here load with Python's safetensors.torch.load_file, and files
// written by it load here (as long as every tensor is F32 or I64).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tensor/quote.h"  // quoted_text, for messages that show file content
#include "tensor/tensor.h"

namespace ink {

// Tensors by name, in insertion order (which is also the order of their data in a written file).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The contents of a safetensors file. `tensors` keeps the order of the header.
struct SafetensorsFile {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

// How many characters of a name or string from a file error messages show (see quoted_text).
inline constexpr size_t kMaxQuotedCharacters = 120;

// The largest JSON header the reader accepts, as in the reference implementation.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// The bytes of a safetensors file holding `tensors` (Float32 or Int64, any rank up to kMaxRank,
// including scalars and zero-size tensors). The data is laid out in the given order and the
// header is padded with spaces to a multiple of 8 bytes. An empty `metadata` writes no
// "__metadata__" entry. Throws ink::Error on a duplicate or reserved name, an undefined tensor,
// or a name or metadata string that is not valid UTF-8.
std::vector<uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                           const std::map<std::string, std::string>& metadata = {
                                               {"format", "pt"}});

// serialize_safetensors, then write_file_atomic: the file at `path` is either the previous one
// or the complete new one, never a mixture.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Parses a whole safetensors file held in memory. The bytes are untrusted: a file shorter than
// 8 bytes, a header length over 100 MB or past the end, invalid JSON, duplicate keys, missing,
// unknown or wrongly typed fields, dtypes other than F32 and I64, shapes that are negative,
// fractional, over rank 4 or overflowing, sizes that disagree with the offsets, and data_offsets
// that overlap, leave gaps, run past the end or leave bytes over all throw
// ink::Error "safetensors: <source_name>: <problem>". Header entries may come in any order (as
// the reference reader allows); `tensors` keeps the header's order. Tensors are allocated only
// after the whole header has been checked against the data, so they hold at most bytes.size().
SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes,
                                  const std::string& source_name = "<memory>");

// Reads and parses the file at `path`. A missing, unreadable, empty or non-regular file (such as
// a directory) throws ink::Error naming the path.
SafetensorsFile load_safetensors(const std::string& path);

// Replaces the file at `path` with `bytes` atomically: writes a uniquely named temporary file in
// the same folder, flushes it to disk, renames it over `path` and flushes the folder. On failure
// the temporary file is removed, the previous file at `path` is left untouched, and ink::Error
// names the path and the system's reason. Suitable for any output that must never be half
// written (checkpoints, config.json, images).
//
// What is already at `path` decides how, because renaming over it would destroy it:
// - a symbolic link is followed: the regular file it leads to is replaced (or created) as above
//   and the link is kept;
// - a character device (/dev/null, /dev/full, a terminal), a FIFO, or a link through /proc
//   (/dev/stdout, /dev/fd/N) is opened and written in place, not atomically, so "-o /dev/stdout"
//   and pipes work and /dev/full fails with "No space left on device";
// - a block device or a socket is refused with an ink::Error.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace ink
