// Reading and writing safetensors files, and the atomic file writer (see safetensors.h).
// The reader treats every byte as hostile: it checks the whole header against the data before it
// allocates a single tensor, and every problem becomes an ink::Error naming the file.
#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "tensor/quote.h"

// The data section is raw little-endian bytes, copied straight into tensors.
static_assert(std::endian::native == std::endian::little,
              "safetensors.cpp assumes a little-endian host; add byte swapping to port it");

namespace ink {
namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

// A name or string from the file, made safe to print: quoted, escaped and cut short (see
// quoted_text), because a hostile header can hold a 100 MB key.
std::string printable(std::string_view text) {
  return quoted_text(text, kMaxQuotedCharacters);
}

std::string errno_text(int error) {
  return std::generic_category().message(error);
}

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32:
      return "F32";
    case DType::Float64:
      return "F64";
    case DType::Int64:
      return "I64";
  }
  INK_FAIL("safetensors: DType {} has no safetensors name", static_cast<int>(dtype));
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

// Throws "safetensors: <source>: <problem>".
template <typename... Args>
[[noreturn]] void fail(std::string_view source, fmt::format_string<Args...> format,
                       Args&&... args) {
  throw Error(
      fmt::format("safetensors: {}: {}", source, fmt::format(format, std::forward<Args>(args)...)));
}

// One tensor's entry in the header, before it is checked against the data.
struct HeaderEntry {
  std::string name;
  DType dtype = DType::Float32;
  Shape shape;
  uint64_t begin = 0;  // data_offsets, in bytes from the start of the data section
  uint64_t end = 0;
  size_t num_offsets = 0;  // how many data_offsets values were read (must be 2)
};

// What this object represents: the JSON header of a safetensors file, checked while nlohmann's
// SAX parser reads it. It stores only what the format allows: nesting deeper than
// header -> entry -> shape is rejected on the spot, shapes stop at kMaxRank, and duplicate keys
// (which a DOM parse would silently collapse to the last one) are errors. So memory stays
// proportional to the real content of the header, whatever the input.
class HeaderReader {
 public:
  using json = nlohmann::json;

  explicit HeaderReader(std::string_view source) : source_(source) {}

  void read(std::span<const uint8_t> header) {
    bool ok = false;
    try {
      ok = json::sax_parse(header.begin(), header.end(), this);
    } catch (const json::exception& e) {
      fail(source_, "invalid JSON in the header: {}", shortened(e.what()));
    }
    if (!ok || where_ != Where::kDone) fail(source_, "invalid JSON in the header");
  }

  std::vector<HeaderEntry> entries;  // in header order
  std::map<std::string, std::string> metadata;

  // ---- nlohmann SAX interface. Problems throw, so every handler that returns says "go on". ----
  bool null() { return unexpected("null"); }
  bool boolean(bool) { return unexpected("a boolean"); }
  bool binary(json::binary_t&) { return unexpected("binary data"); }

  bool number_unsigned(uint64_t value) {
    if (where_ == Where::kShape) return shape_size(value);
    if (where_ == Where::kOffsets) return data_offset(value);
    return unexpected("a number");
  }

  bool number_integer(int64_t value) {
    // nlohmann reports non-negative literals as unsigned; only "-0" gets here non-negative.
    if (value >= 0) return number_unsigned(static_cast<uint64_t>(value));
    if (where_ == Where::kShape) {
      fail(source_, "tensor {}: shape has a negative size {}", printable(entry().name), value);
    }
    if (where_ == Where::kOffsets) {
      fail(source_, "tensor {}: data_offsets has a negative value {}", printable(entry().name),
           value);
    }
    return unexpected("a number");
  }

  bool number_float(double, const std::string& literal) {
    if (where_ == Where::kShape) {
      fail(source_, "tensor {}: shape size {} is not an integer", printable(entry().name),
           printable(literal));
    }
    if (where_ == Where::kOffsets) {
      fail(source_, "tensor {}: data_offsets value {} is not an integer", printable(entry().name),
           printable(literal));
    }
    return unexpected("a number");
  }

  bool string(std::string& value) {
    if (where_ == Where::kEntry && field_ == kDtype) {
      entry().dtype = parse_dtype(value);
      return true;
    }
    if (where_ == Where::kMetadata) {
      metadata.emplace(std::move(key_), std::move(value));
      return true;
    }
    return unexpected("a string");
  }

  bool start_object(std::size_t) {
    switch (where_) {
      case Where::kStart:
        where_ = Where::kTop;
        return true;
      case Where::kTop:
        if (key_ == kMetadataKey) {
          where_ = Where::kMetadata;
        } else {
          entries.emplace_back().name = std::move(key_);
          fields_seen_ = 0;
          where_ = Where::kEntry;
        }
        return true;
      default:
        return unexpected("an object");
    }
  }

  bool key(std::string& name) {
    switch (where_) {
      case Where::kTop:
        if (!names_seen_.insert(name).second) {
          fail(source_, "duplicate name {} in the header", printable(name));
        }
        key_ = std::move(name);
        return true;
      case Where::kEntry:
        field_ = field_bit(name);
        if (field_ == 0) {
          fail(source_, "tensor {}: unknown field {} (expected dtype, shape and data_offsets)",
               printable(entry().name), printable(name));
        }
        if (fields_seen_ & field_) {
          fail(source_, "tensor {}: field {} appears twice", printable(entry().name),
               printable(name));
        }
        fields_seen_ |= field_;
        return true;
      case Where::kMetadata:
        if (metadata.contains(name)) {
          fail(source_, "duplicate key {} in __metadata__", printable(name));
        }
        key_ = std::move(name);
        return true;
      default:
        fail(source_, "invalid JSON in the header (unexpected key)");
    }
  }

  bool end_object() {
    switch (where_) {
      case Where::kTop:
        where_ = Where::kDone;
        return true;
      case Where::kEntry:
        for (const auto& [bit, field_name] : kFields) {
          if (!(fields_seen_ & bit)) {
            fail(source_, "tensor {}: missing field {}", printable(entry().name), field_name);
          }
        }
        where_ = Where::kTop;
        return true;
      case Where::kMetadata:
        where_ = Where::kTop;
        return true;
      default:
        fail(source_, "invalid JSON in the header (unexpected end of object)");
    }
  }

  bool start_array(std::size_t) {
    if (where_ == Where::kEntry && field_ == kShape) {
      where_ = Where::kShape;
      return true;
    }
    if (where_ == Where::kEntry && field_ == kDataOffsets) {
      where_ = Where::kOffsets;
      return true;
    }
    return unexpected("an array");
  }

  bool end_array() {
    if (where_ == Where::kOffsets && entry().num_offsets != 2) {
      fail(source_, "tensor {}: data_offsets must be [begin, end], found {} value(s)",
           printable(entry().name), entry().num_offsets);
    }
    if (where_ != Where::kShape && where_ != Where::kOffsets) {
      fail(source_, "invalid JSON in the header (unexpected end of array)");
    }
    where_ = Where::kEntry;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const json::exception& e) {
    fail(source_, "invalid JSON in the header: {}", shortened(e.what()));
  }

 private:
  // Where the parser is: which container it is in (and so what the next value must be).
  enum class Where { kStart, kTop, kEntry, kShape, kOffsets, kMetadata, kDone };

  static constexpr std::string_view kMetadataKey = "__metadata__";
  static constexpr unsigned kDtype = 1, kShape = 2, kDataOffsets = 4;
  static constexpr std::array<std::pair<unsigned, const char*>, 3> kFields = {
      {{kDtype, "dtype"}, {kShape, "shape"}, {kDataOffsets, "data_offsets"}}};

  static unsigned field_bit(std::string_view name) {
    for (const auto& [bit, field_name] : kFields) {
      if (name == field_name) return bit;
    }
    return 0;
  }

  static const char* field_name(unsigned bit) {
    for (const auto& [b, name] : kFields) {
      if (b == bit) return name;
    }
    return "?";
  }

  // nlohmann's messages start with an id ("[json.exception.parse_error.101] ") and end with the
  // last token read, which may be huge or binary.
  static std::string shortened(std::string_view message) {
    if (message.starts_with("[json.exception.") && message.find("] ") != std::string_view::npos) {
      message.remove_prefix(message.find("] ") + 2);
    }
    constexpr size_t kMaxShown = 200;
    std::string out;
    for (size_t i = 0; i < message.size() && i < kMaxShown; ++i) {
      const auto c = static_cast<unsigned char>(message[i]);
      out += (c < 0x20 || c >= 0x7f) ? '?' : static_cast<char>(c);
    }
    if (message.size() > kMaxShown) out += "...";
    return out;
  }

  HeaderEntry& entry() { return entries.back(); }

  DType parse_dtype(const std::string& name) {
    if (name == "F32") return DType::Float32;
    if (name == "I64") return DType::Int64;
    static const std::set<std::string, std::less<>> kKnownElsewhere = {
        "BOOL", "U8",   "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16",
        "F16",  "BF16", "I32", "U32",     "F64",     "U64"};
    if (kKnownElsewhere.contains(name)) {
      fail(source_, "tensor {}: dtype {} is not supported (inkgrad reads F32 and I64)",
           printable(entry().name), printable(name));
    }
    fail(source_, "tensor {}: unknown dtype {} (inkgrad reads F32 and I64)",
         printable(entry().name), printable(name));
  }

  bool shape_size(uint64_t size) {
    Shape& shape = entry().shape;
    if (static_cast<int64_t>(shape.size()) == kMaxRank) {
      fail(source_, "tensor {}: shape has more than {} dimensions (inkgrad supports rank <= {})",
           printable(entry().name), kMaxRank, kMaxRank);
    }
    if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(source_, "tensor {}: shape size {} is too large", printable(entry().name), size);
    }
    shape.push_back(static_cast<int64_t>(size));
    return true;
  }

  bool data_offset(uint64_t offset) {
    HeaderEntry& e = entry();
    if (e.num_offsets == 2) {
      fail(source_, "tensor {}: data_offsets must be [begin, end], found more than 2 values",
           printable(e.name));
    }
    (e.num_offsets == 0 ? e.begin : e.end) = offset;
    ++e.num_offsets;
    return true;
  }

  // A value of the wrong kind for where it appears. `found` says what it is.
  [[noreturn]] bool unexpected(const char* found) {
    switch (where_) {
      case Where::kStart:
        fail(source_, "the header is not a JSON object (found {})", found);
      case Where::kTop:
        if (key_ == kMetadataKey) fail(source_, "__metadata__ is not an object (found {})", found);
        fail(source_, "tensor {}: entry is not an object (found {})", printable(key_), found);
      case Where::kEntry:
        fail(source_, "tensor {}: {} must be {} (found {})", printable(entry().name),
             field_name(field_), field_ == kDtype ? "a string" : "an array of integers", found);
      case Where::kShape:
        fail(source_, "tensor {}: shape sizes must be integers (found {})", printable(entry().name),
             found);
      case Where::kOffsets:
        fail(source_, "tensor {}: data_offsets must be integers (found {})",
             printable(entry().name), found);
      case Where::kMetadata:
        fail(source_, "__metadata__ value for key {} must be a string (found {})", printable(key_),
             found);
      case Where::kDone:
        break;
    }
    fail(source_, "invalid JSON in the header (found {} after the end)", found);
  }

  std::string_view source_;
  Where where_ = Where::kStart;
  std::string key_;     // the key whose value comes next (top level or __metadata__)
  unsigned field_ = 0;  // the entry field whose value comes next
  unsigned fields_seen_ = 0;
  std::set<std::string> names_seen_;  // top-level keys, to catch duplicates
};

// The element count of `shape`, or an error if it (or the product of its non-zero sizes, which
// stride computations use) overflows int64.
uint64_t checked_numel(const HeaderEntry& e, std::string_view source) {
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t numel = 1;
  uint64_t nonzero_product = 1;
  for (int64_t size : e.shape) {
    const auto s = static_cast<uint64_t>(size);
    if (s > 1 && nonzero_product > kMax / s) {
      fail(source, "tensor {}: the element count of shape {} overflows", printable(e.name),
           shape_str(e.shape));
    }
    nonzero_product *= std::max<uint64_t>(s, 1);
    numel *= s;
  }
  return numel;
}

// Checks every entry against the data section: byte sizes, bounds, and that the entries tile
// the data exactly (no overlap, no gap, nothing left over). Entries may be listed in any order,
// as the reference reader allows; they are checked in data order.
void check_layout(const std::vector<HeaderEntry>& entries, uint64_t data_size,
                  std::string_view source) {
  for (const HeaderEntry& e : entries) {
    const auto offsets = fmt::format("[{}, {}]", e.begin, e.end);
    if (e.begin > e.end) {
      fail(source, "tensor {}: data_offsets {} are reversed (begin > end)", printable(e.name),
           offsets);
    }
    if (e.end > data_size) {
      fail(source,
           "tensor {}: data_offsets {} reach past the end of the data section ({} bytes); "
           "the file is truncated or its header is wrong",
           printable(e.name), offsets, data_size);
    }
    const uint64_t numel = checked_numel(e, source);
    const uint64_t element_size = dtype_size(e.dtype);
    // Divide first, so that a huge element count cannot overflow the multiplication.
    if (numel > (e.end - e.begin) / element_size || numel * element_size != e.end - e.begin) {
      fail(source,
           "tensor {}: shape {} of {} needs {} elements of {} bytes, but data_offsets {} hold {} "
           "bytes",
           printable(e.name), shape_str(e.shape), safetensors_dtype_name(e.dtype), numel,
           element_size, offsets, e.end - e.begin);
    }
  }

  std::vector<size_t> order(entries.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::pair(entries[a].begin, entries[a].end) <
           std::pair(entries[b].begin, entries[b].end);
  });
  uint64_t covered = 0;  // the data is tiled up to here
  const HeaderEntry* previous = nullptr;
  for (size_t i : order) {
    const HeaderEntry& e = entries[i];
    if (e.begin < covered) {
      fail(source, "tensor {} (data_offsets [{}, {}]) overlaps tensor {} (data_offsets [{}, {}])",
           printable(e.name), e.begin, e.end, printable(previous->name), previous->begin,
           previous->end);
    }
    if (e.begin > covered) {
      fail(source, "data_offsets leave a gap of {} bytes before tensor {} (data_offsets [{}, {}])",
           e.begin - covered, printable(e.name), e.begin, e.end);
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size) {
    fail(source,
         "the tensors cover {} bytes but the data section has {}: data_offsets must cover the "
         "data exactly ({} trailing bytes belong to no tensor)",
         covered, data_size, data_size - covered);
  }
}

// The length N of the JSON header, from the first bytes of a file of `file_size` bytes
// (`prefix` holds its first min(8, file_size) bytes), checked against the limit and the size.
uint64_t checked_header_size(std::span<const uint8_t> prefix, uint64_t file_size,
                             std::string_view source) {
  if (file_size == 0) {
    fail(source, "the file is empty (a safetensors file starts with an 8-byte header length)");
  }
  if (file_size < 8) {
    fail(source,
         "the file is only {} bytes long (a safetensors file starts with an 8-byte header length)",
         file_size);
  }
  uint64_t header_size = 0;
  std::memcpy(&header_size, prefix.data(), 8);
  if (header_size > kSafetensorsMaxHeaderBytes) {
    fail(source,
         "header length {} exceeds the limit of {} bytes (100 MB); is this a safetensors file?",
         header_size, kSafetensorsMaxHeaderBytes);
  }
  if (header_size > file_size - 8) {
    fail(source,
         "header length {} is longer than the {} bytes that follow it; the file is truncated or "
         "is not a safetensors file",
         header_size, file_size - 8);
  }
  return header_size;
}

// A header read and checked against the size of its file: every entry fits the data section and
// the entries tile it exactly.
struct CheckedHeader {
  std::vector<HeaderEntry> entries;  // in header order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // byte offset of the data section in the file
  uint64_t data_size = 0;
};

CheckedHeader check_header(std::span<const uint8_t> header_bytes, uint64_t file_size,
                           std::string_view source) {
  HeaderReader header(source);
  header.read(header_bytes);
  CheckedHeader checked;
  checked.data_start = 8 + header_bytes.size();
  checked.data_size = file_size - checked.data_start;
  check_layout(header.entries, checked.data_size, source);
  checked.entries = std::move(header.entries);
  checked.metadata = std::move(header.metadata);
  return checked;
}

void* raw_data_for_write(const Tensor& t) {
  const size_t element = dtype_size(t.dtype());
  return static_cast<uint8_t*>(t.impl()->storage->data()) + t.impl()->offset * element;
}

// Reads exactly `size` bytes at `offset` of `fd` into `out`, or fails naming `path`.
void read_exactly(int fd, uint64_t offset, void* out, uint64_t size, const std::string& path) {
  auto* bytes = static_cast<uint8_t*>(out);
  uint64_t done = 0;
  while (done < size) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size - done, uint64_t{1} << 30));
    const ssize_t n = ::pread(fd, bytes + done, chunk, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "cannot read the file: {}", errno_text(errno));
    if (n == 0) fail(path, "the file is truncated (it shrank while it was being read)");
    done += static_cast<uint64_t>(n);
  }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

// `text` as a JSON string literal. nlohmann escapes it and rejects invalid UTF-8.
std::string json_string(const std::string& text, std::string_view what) {
  try {
    return nlohmann::json(text).dump();
  } catch (const nlohmann::json::exception&) {
    INK_FAIL("serialize_safetensors: {} {} is not valid UTF-8", what, printable(text));
  }
}

const void* raw_data(const Tensor& t) {
  const size_t element = dtype_size(t.dtype());
  return static_cast<const uint8_t*>(std::as_const(*t.impl()->storage).data()) +
         t.impl()->offset * element;
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ',';
      first = false;
      header += json_string(key, "metadata key");
      header += ':';
      header += json_string(value, "metadata value");
    }
    header += '}';
  }

  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    INK_CHECK(name != "__metadata__",
              "serialize_safetensors: \"__metadata__\" is reserved and cannot name a tensor");
    INK_CHECK(names.insert(name).second, "serialize_safetensors: duplicate tensor name {}",
              printable(name));
    INK_CHECK(tensor.defined(), "serialize_safetensors: tensor {} is undefined", printable(name));
    const uint64_t nbytes = static_cast<uint64_t>(tensor.numel()) * dtype_size(tensor.dtype());
    if (header.size() > 1) header += ',';
    header += fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                          json_string(name, "tensor name"), safetensors_dtype_name(tensor.dtype()),
                          fmt::join(tensor.shape(), ","), offset, offset + nbytes);
    offset += nbytes;
  }
  header += '}';
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  header.append((8 - header.size() % 8) % 8, ' ');

  std::vector<uint8_t> bytes(8 + header.size() + offset);
  const uint64_t header_size = header.size();
  std::memcpy(bytes.data(), &header_size, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  uint8_t* out = bytes.data() + 8 + header.size();
  for (const auto& [name, tensor] : tensors) {
    const size_t nbytes = static_cast<size_t>(tensor.numel()) * dtype_size(tensor.dtype());
    if (nbytes > 0) std::memcpy(out, raw_data(tensor), nbytes);
    out += nbytes;
  }
  return bytes;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes, const std::string& source_name) {
  const std::string_view source = source_name;
  const uint64_t header_size =
      checked_header_size(bytes.first(std::min<size_t>(bytes.size(), 8)), bytes.size(), source);
  CheckedHeader header = check_header(bytes.subspan(8, header_size), bytes.size(), source);

  // Everything is consistent: allocate. The tensors together hold exactly data_size bytes.
  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  file.tensors.reserve(header.entries.size());
  for (HeaderEntry& e : header.entries) {
    Tensor t = empty(e.shape, e.dtype);
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes > 0)
      std::memcpy(raw_data_for_write(t), bytes.data() + header.data_start + e.begin, nbytes);
    file.tensors.emplace_back(std::move(e.name), std::move(t));
  }
  return file;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not hang waiting for a writer (no effect on regular files).
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) fail(path, "cannot open the file: {}", errno_text(errno));
  try {
    struct stat info {};
    if (::fstat(fd_, &info) != 0) fail(path, "cannot read the file: {}", errno_text(errno));
    if (S_ISDIR(info.st_mode)) fail(path, "is a directory, not a safetensors file");
    if (!S_ISREG(info.st_mode)) fail(path, "is not a regular file");
    const auto file_size = static_cast<uint64_t>(info.st_size);

    // Only the length and the header are read here, whatever size the file claims to be.
    std::array<uint8_t, 8> prefix{};
    const uint64_t prefix_size = std::min<uint64_t>(file_size, 8);
    read_exactly(fd_, 0, prefix.data(), prefix_size, path);
    const uint64_t header_size =
        checked_header_size({prefix.data(), static_cast<size_t>(prefix_size)}, file_size, path);
    std::vector<uint8_t> header_bytes(static_cast<size_t>(header_size));
    read_exactly(fd_, 8, header_bytes.data(), header_size, path);
    CheckedHeader header = check_header(header_bytes, file_size, path);

    data_start_ = header.data_start;
    data_size_ = header.data_size;
    metadata_ = std::move(header.metadata);
    entries_.reserve(header.entries.size());
    for (HeaderEntry& e : header.entries) {
      entries_.push_back(
          {std::move(e.name), e.dtype, std::move(e.shape), e.begin, e.end - e.begin});
    }
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  ::close(fd_);
}

void SafetensorsReader::read_into(size_t index, const Tensor& destination) const {
  INK_CHECK(index < entries_.size(), "SafetensorsReader::read_into: index {} of {} tensors", index,
            entries_.size());
  const SafetensorsEntry& e = entries_[index];
  INK_CHECK(destination.defined() && destination.dtype() == e.dtype &&
                destination.numel() * static_cast<int64_t>(dtype_size(e.dtype)) ==
                    static_cast<int64_t>(e.size),
            "SafetensorsReader::read_into: tensor {} of {} is {} {}, the destination is not a "
            "contiguous tensor of that dtype and size",
            printable(e.name), path_, safetensors_dtype_name(e.dtype), shape_str(e.shape));
  if (e.size > 0)
    read_exactly(fd_, data_start_ + e.offset, raw_data_for_write(destination), e.size, path_);
}

SafetensorsFile SafetensorsReader::read_all(uint64_t max_data_bytes) const {
  if (data_size_ > max_data_bytes) {
    fail(path_, "its tensors hold {} bytes, more than the {} bytes expected here", data_size_,
         max_data_bytes);
  }
  SafetensorsFile file;
  file.metadata = metadata_;
  file.tensors.reserve(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    Tensor t = empty(entries_[i].shape, entries_[i].dtype);
    read_into(i, t);
    file.tensors.emplace_back(entries_[i].name, std::move(t));
  }
  return file;
}

SafetensorsFile load_safetensors(const std::string& path, uint64_t max_data_bytes) {
  return SafetensorsReader(path).read_all(max_data_bytes);
}

namespace {

// Writes all of `bytes` to `fd`, retrying short writes; returns 0 or the errno of the failure.
int write_all(int fd, std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - done, size_t{1} << 30);
    const ssize_t n = ::write(fd, bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    done += static_cast<size_t>(n);
  }
  return 0;
}

// Where write_file_atomic puts the bytes. kReplace: a new file renamed over `path` (which may
// not exist yet). kDirect: `path` is opened and written in place, because it is not a file that
// may be replaced: a device such as /dev/null or /dev/full, a FIFO, or a link through /proc such
// as /dev/stdout (renaming over those would destroy the device node or the link).
struct WriteTarget {
  enum class Kind { kReplace, kDirect } kind;
  std::string path;
};

// True when the folder holding `path` is inside /proc, whose links (/proc/self/fd/1, and
// /dev/fd/1 or /dev/stdout which lead there) name open descriptors rather than paths.
bool in_proc(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path folder =
      std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec).parent_path(), ec);
  return !ec && (folder == "/proc" || folder.string().starts_with("/proc/"));
}

// Follows `path` through its symbolic links to what a write would reach. A symlink to a regular
// file (or to nothing yet) means that file is replaced and the link kept.
WriteTarget resolve_write_target(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path current = path;
  for (int hop = 0;; ++hop) {
    struct stat info {};
    if (::lstat(current.c_str(), &info) != 0) {
      // Nothing there (a new file, or a dangling link's target): create it. Other problems
      // (a missing folder, no permission) are reported by the writer with the path.
      return {WriteTarget::Kind::kReplace, current.string()};
    }
    if (S_ISLNK(info.st_mode)) {
      if (in_proc(current) || hop == 40) return {WriteTarget::Kind::kDirect, path};
      std::error_code ec;
      const fs::path target = fs::read_symlink(current, ec);
      if (ec) return {WriteTarget::Kind::kDirect, path};  // open() reports why
      current = target.is_absolute() ? target : current.parent_path() / target;
      continue;
    }
    if (S_ISREG(info.st_mode) || S_ISDIR(info.st_mode)) {
      // A folder is "replaced" too, so that the rename fails with the system's reason.
      return {WriteTarget::Kind::kReplace, current.string()};
    }
    if (S_ISBLK(info.st_mode)) {
      INK_FAIL(
          "write_file_atomic: cannot write \"{}\": it is a block device (a disk or partition); "
          "refusing to write onto it",
          path);
    }
    if (S_ISSOCK(info.st_mode)) {
      INK_FAIL("write_file_atomic: cannot write \"{}\": it is a socket, not a file", path);
    }
    return {WriteTarget::Kind::kDirect, path};  // a character device or a FIFO
  }
}

// Writes into an existing non-regular file (or through /proc) without replacing it. Blocks like
// a shell redirection would until a FIFO has a reader.
void write_in_place(const std::string& path, std::span<const uint8_t> bytes) {
  // O_APPEND: through /dev/stdout to a regular file, keep what the process printed before.
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    INK_FAIL("write_file_atomic: cannot write \"{}\": open failed: {}", path, errno_text(errno));
  }
  int error = write_all(fd, bytes);
  const char* step = "write";
  struct stat info {};
  if (error == 0 && ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && ::fsync(fd) != 0) {
    error = errno, step = "fsync";
  }
  if (::close(fd) != 0 && error == 0) error = errno, step = "close";
  if (error != 0) {
    INK_FAIL("write_file_atomic: cannot write \"{}\": {} failed: {}", path, step,
             errno_text(error));
  }
}

// Replaces the regular file `target` (or creates it) atomically; messages name `shown_path`,
// what the caller asked to write.
void replace_file(const std::string& shown_path, const std::string& target_path,
                  std::span<const uint8_t> bytes) {
  const std::filesystem::path target(target_path);
  const std::string base = target.filename().string();
  INK_CHECK(!base.empty(), "write_file_atomic: \"{}\" does not name a file", shown_path);
  std::filesystem::path folder = target.parent_path();
  if (folder.empty()) folder = ".";

  // A hidden temporary beside the target: rename is atomic only within one file system. The pid
  // and a counter make the name unique across processes and threads; O_EXCL makes sure.
  static std::atomic<uint64_t> counter{0};
  std::string temp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    temp = (folder / fmt::format(".{}.tmp-{}-{}", base.substr(0, 200), ::getpid(), counter++))
               .string();
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt == 100)) {
      INK_FAIL(
          "write_file_atomic: cannot write \"{}\": cannot create a temporary file in \"{}\": {}",
          shown_path, folder.string(), errno_text(errno));
    }
  }

  // On any failure: close, remove the temporary, leave the previous file alone.
  auto give_up = [&](const char* step, int error) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    INK_FAIL("write_file_atomic: cannot write \"{}\": {} failed: {}", shown_path, step,
             errno_text(error));
  };

  if (const int error = write_all(fd, bytes); error != 0) give_up("write", error);
  if (::fsync(fd) != 0) give_up("fsync", errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) give_up("close", errno);
  if (::rename(temp.c_str(), target_path.c_str()) != 0) give_up("rename", errno);

  // Make the rename itself durable. This is best effort: whether or not it succeeds, a crash
  // leaves either the previous file or the complete new one, which is the promise we make.
  const int folder_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (folder_fd >= 0) {
    ::fsync(folder_fd);
    ::close(folder_fd);
  }
}

}  // namespace

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const WriteTarget target = resolve_write_target(path);
  if (target.kind == WriteTarget::Kind::kDirect) {
    write_in_place(target.path, bytes);
  } else {
    replace_file(path, target.path, bytes);
  }
}

}  // namespace ink
