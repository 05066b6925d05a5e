// Tests for the safetensors reader and writer: round trips, the exact byte layout, every kind of
// malformed file the reader must reject, atomic writes, and a file written from PyTorch.
#include "nn/safetensors.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tensor/error.h"

namespace ink {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

// ---- helpers ----

// A file from a header given as text (not padded) and `data_size` data bytes of 0xAB.
std::vector<uint8_t> file_bytes(std::string_view header, size_t data_size = 0) {
  std::vector<uint8_t> bytes(8 + header.size() + data_size, 0xAB);
  const uint64_t n = header.size();
  for (size_t i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), bytes.begin() + 8);
  return bytes;
}

std::vector<uint8_t> raw_bytes(const Tensor& t) {
  const size_t n = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  std::vector<uint8_t> out(n);
  if (n > 0) {
    const void* src = t.dtype() == DType::Float32 ? static_cast<const void*>(t.data())
                                                  : static_cast<const void*>(t.data_i64());
    std::memcpy(out.data(), src, n);
  }
  return out;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The error message parse_safetensors gives for `bytes`, or "" if it accepts them.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    parse_safetensors(bytes, "bad.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string load_error(const fs::path& path) {
  try {
    load_safetensors(path.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Tensors covering both dtypes, a scalar, a zero-size tensor, rank 4, and awkward float bits.
NamedTensors sample_tensors() {
  const std::vector<float> awkward = {-0.0f,
                                      std::numeric_limits<float>::infinity(),
                                      std::bit_cast<float>(0x7fc01234u),  // NaN with a payload
                                      std::numeric_limits<float>::denorm_min(),
                                      FLT_MAX,
                                      1.0f / 3.0f};
  return {
      {"encoder.weight", from_vector(awkward, {2, 3})},
      {"encoder.bias", from_vector({0.5f, -1.25f}, {2})},
      {"bn.num_batches_tracked", from_vector_i64({7}, {})},
      {"tokens",
       from_vector_i64(
           {std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max()}, {4})},
      {"empty", empty({0, 3})},
      {"image", from_vector({1, 2, 3, 4, 5, 6, 7, 8}, {1, 2, 2, 2})},
  };
}

void expect_same_tensors(const NamedTensors& actual, const NamedTensors& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].first);
    EXPECT_EQ(actual[i].first, expected[i].first);
    EXPECT_EQ(actual[i].second.dtype(), expected[i].second.dtype());
    EXPECT_EQ(actual[i].second.shape(), expected[i].second.shape());
    EXPECT_EQ(raw_bytes(actual[i].second), raw_bytes(expected[i].second));
  }
}

// A fresh directory per test, removed afterwards.
class SafetensorsFiles : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("inkgrad_safetensors_{}_{}", ::getpid(),
                       testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }
  std::vector<std::string> entries(const fs::path& folder) const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(folder)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  fs::path dir_;
};

// ---- round trips and layout ----

TEST(Safetensors, RoundTripKeepsNamesOrderDtypesShapesAndBits) {
  const NamedTensors tensors = sample_tensors();
  const SafetensorsFile file = parse_safetensors(serialize_safetensors(tensors));
  expect_same_tensors(file.tensors, tensors);
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(file.tensors[2].second.dim(), 0);
  EXPECT_EQ(file.tensors[2].second.item_i64(), 7);
}

TEST(Safetensors, HeaderIsPaddedToEightBytesAndStartsWithMetadata) {
  const NamedTensors tensors = {{"a", from_vector({1.0f, 2.0f}, {2})}};
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 8);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<ptrdiff_t>(n));
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(header, json + std::string(n - json.size(), ' '));
  EXPECT_GT(n, json.size());  // this header needed padding
  float values[2];
  std::memcpy(values, bytes.data() + 8 + n, 8);
  EXPECT_EQ(values[0], 1.0f);
  EXPECT_EQ(values[1], 2.0f);
}

TEST(Safetensors, AFloat64TensorIsNamedF64) {
  // The writer names every DType (F64 is the format's name for double); the reader still takes
  // F32 and I64 only, and says so.
  const std::vector<uint8_t> bytes = serialize_safetensors({{"x", zeros({2}, DType::Float64)}}, {});
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + bytes[0]);
  EXPECT_THAT(header, HasSubstr(R"("x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]})"));
  EXPECT_THAT(
      parse_error(bytes),
      HasSubstr("tensor \"x\": dtype \"F64\" is not supported (inkgrad reads F32 and I64)"));
}

// Byte layouts published in the reference implementation's own tests (safetensors/src/tensor.rs).
TEST(Safetensors, MatchesTheReferenceWritersBytes) {
  auto expect_header = [](const std::vector<uint8_t>& bytes, const std::string& header) {
    ASSERT_GE(bytes.size(), 8 + header.size());
    EXPECT_EQ(std::string(bytes.begin() + 8, bytes.begin() + 8 + header.size()), header);
    EXPECT_EQ(bytes[0], header.size());
  };
  expect_header(serialize_safetensors({}, {}), "{}      ");
  expect_header(serialize_safetensors({}, {{"framework", "pt"}}),
                R"({"__metadata__":{"framework":"pt"}}     )");

  const Tensor attn = from_vector({0, 1, 2, 3, 4, 5}, {1, 2, 3});
  const std::vector<uint8_t> bytes = serialize_safetensors({{"attn.0", attn}}, {});
  expect_header(bytes, R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})");
  EXPECT_EQ(bytes.size(), 8u + 64u + 24u);
  const std::vector<uint8_t> data(bytes.end() - 24, bytes.end());
  EXPECT_EQ(data, raw_bytes(attn));

  const std::vector<uint8_t> aligned =
      serialize_safetensors({{"attn0", attn.reshape({1, 1, 2, 3})}}, {});
  EXPECT_EQ(aligned[0], 72);  // 65 bytes of JSON + 7 spaces
}

TEST(Safetensors, MetadataIsKeptAndEmptyMetadataIsOmitted) {
  const NamedTensors tensors = {{"w", from_vector({1.0f}, {1})}};
  const std::map<std::string, std::string> metadata = {{"epoch", "3"}, {"note", "a \"quoted\"\n"}};
  EXPECT_EQ(parse_safetensors(serialize_safetensors(tensors, metadata)).metadata, metadata);

  const std::vector<uint8_t> bare = serialize_safetensors(tensors, {});
  EXPECT_EQ(std::string(bare.begin() + 8, bare.end()).find("__metadata__"), std::string::npos);
  EXPECT_TRUE(parse_safetensors(bare).metadata.empty());
}

TEST(Safetensors, EmptyTensorListRoundTrips) {
  const SafetensorsFile file = parse_safetensors(serialize_safetensors({}));
  EXPECT_TRUE(file.tensors.empty());
  EXPECT_EQ(file.metadata.at("format"), "pt");
}

TEST(Safetensors, WriterRejectsBadNames) {
  const Tensor t = from_vector({1.0f}, {1});
  auto error = [](const NamedTensors& tensors) -> std::string {
    try {
      serialize_safetensors(tensors);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_THAT(error({{"a", t}, {"a", t}}), HasSubstr("duplicate tensor name \"a\""));
  EXPECT_THAT(error({{"__metadata__", t}}), HasSubstr("\"__metadata__\" is reserved"));
  EXPECT_THAT(error({{"a", Tensor()}}), HasSubstr("tensor \"a\" is undefined"));
  EXPECT_THAT(error({{"bad\xff", t}}), HasSubstr("is not valid UTF-8"));
}

// ---- a file written by PyTorch-compatible code (scripts/make_safetensors_golden.py) ----

TEST(Safetensors, ReadsTheFileWrittenFromPyTorch) {
  const std::string golden = std::string(INK_TEST_DATA_DIR) + "/golden_pt.safetensors";
  const SafetensorsFile file = load_safetensors(golden);
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));

  std::ifstream values(std::string(INK_TEST_DATA_DIR) + "/golden_pt_values.txt");
  ASSERT_TRUE(values) << "missing golden_pt_values.txt";
  size_t index = 0;
  for (std::string line; std::getline(values, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string name, dtype, shape_text;
    in >> name >> dtype >> shape_text;
    SCOPED_TRACE(name);
    ASSERT_LT(index, file.tensors.size());
    const auto& [actual_name, t] = file.tensors[index++];
    EXPECT_EQ(actual_name, name);
    Shape shape;
    std::istringstream dims(shape_text.substr(1, shape_text.size() - 2));
    for (std::string dim; std::getline(dims, dim, ',');) shape.push_back(std::stoll(dim));
    EXPECT_EQ(t.shape(), shape);
    if (dtype == "I64") {
      ASSERT_EQ(t.dtype(), DType::Int64);
      const std::vector<int64_t> got = t.to_vector_i64();
      for (size_t i = 0; i < got.size(); ++i) {
        std::string v;
        in >> v;
        EXPECT_EQ(got[i], std::stoll(v)) << "element " << i;
      }
    } else {
      ASSERT_EQ(dtype, "F32");
      ASSERT_EQ(t.dtype(), DType::Float32);
      const std::vector<float> got = t.to_vector();
      for (size_t i = 0; i < got.size(); ++i) {
        std::string v;
        in >> v;
        EXPECT_EQ(got[i], std::strtof(v.c_str(), nullptr)) << "element " << i;  // exact
      }
    }
    std::string extra;
    EXPECT_FALSE(in >> extra) << "more values in the text file than in the tensor";
  }
  EXPECT_EQ(index, file.tensors.size());
  EXPECT_EQ(index, 7u);
}

// Written back in the same order, inkgrad's bytes are exactly the Python writer's bytes.
TEST(Safetensors, RewritingThePyTorchFileGivesTheSameBytes) {
  const std::string golden = std::string(INK_TEST_DATA_DIR) + "/golden_pt.safetensors";
  const SafetensorsFile file = load_safetensors(golden);
  EXPECT_EQ(serialize_safetensors(file.tensors, file.metadata), read_bytes(golden));
}

// ---- malformed files: each is rejected with an error that says what is wrong ----

struct Malformed {
  const char* label;
  std::string header;
  size_t data_size;
  const char* expected;
};

void PrintTo(const Malformed& m, std::ostream* os) {
  *os << m.label;
}

class SafetensorsMalformed : public testing::TestWithParam<Malformed> {};

TEST_P(SafetensorsMalformed, IsRejectedWithAClearError) {
  const Malformed& m = GetParam();
  const std::string error = parse_error(file_bytes(m.header, m.data_size));
  EXPECT_THAT(error, HasSubstr("safetensors: bad.safetensors: "));
  EXPECT_THAT(error, HasSubstr(m.expected));
}

// A tensor entry with these fields.
std::string entry(std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return fmt::format(R"({{"dtype":{},"shape":{},"data_offsets":{}}})", dtype, shape, offsets);
}

const Malformed kMalformed[] = {
    // Not JSON, or not the right JSON.
    {"empty_header", "", 0, "invalid JSON in the header"},
    {"not_json", R"({"a":)", 0, "invalid JSON in the header"},
    {"trailing_garbage", "{} x", 0, "invalid JSON in the header"},
    {"invalid_utf8", "{\"a\xff\":1}", 0, "invalid JSON in the header"},
    {"header_array", "[1,2]", 0, "the header is not a JSON object (found an array)"},
    {"header_number", "42", 0, "the header is not a JSON object (found a number)"},
    {"header_string", R"("pt")", 0, "the header is not a JSON object (found a string)"},
    {"entry_array", R"({"a":[1]})", 0, "tensor \"a\": entry is not an object (found an array)"},
    {"entry_null", R"({"a":null})", 0, "tensor \"a\": entry is not an object (found null)"},
    // Fields missing, unknown or of the wrong type.
    {"missing_dtype", R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4,
     "tensor \"a\": missing field dtype"},
    {"missing_shape", R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4,
     "tensor \"a\": missing field shape"},
    {"missing_data_offsets", R"({"a":{"dtype":"F32","shape":[1]}})", 4,
     "tensor \"a\": missing field data_offsets"},
    {"unknown_field", R"({"a":{"dtype":"F32","strides":[1]}})", 4,
     "tensor \"a\": unknown field \"strides\""},
    {"repeated_field", R"({"a":{"dtype":"F32","dtype":"I64"}})", 4,
     "tensor \"a\": field \"dtype\" appears twice"},
    {"dtype_number", "{\"a\":" + entry("32", "[1]", "[0,4]") + "}", 4,
     "tensor \"a\": dtype must be a string (found a number)"},
    {"shape_string", "{\"a\":" + entry(R"("F32")", R"("2x3")", "[0,4]") + "}", 4,
     "tensor \"a\": shape must be an array of integers (found a string)"},
    {"offsets_object", "{\"a\":" + entry(R"("F32")", "[1]", R"({"b":0})") + "}", 4,
     "tensor \"a\": data_offsets must be an array of integers (found an object)"},
    // Dtypes.
    {"unknown_dtype", "{\"a\":" + entry(R"("Q7")", "[1]", "[0,4]") + "}", 4,
     "tensor \"a\": unknown dtype \"Q7\" (inkgrad reads F32 and I64)"},
    {"unsupported_dtype", "{\"a\":" + entry(R"("F16")", "[2]", "[0,4]") + "}", 4,
     "tensor \"a\": dtype \"F16\" is not supported (inkgrad reads F32 and I64)"},
    // Shapes.
    {"negative_size", "{\"a\":" + entry(R"("F32")", "[-2]", "[0,0]") + "}", 0,
     "tensor \"a\": shape has a negative size -2"},
    {"fractional_size", "{\"a\":" + entry(R"("F32")", "[2.5]", "[0,0]") + "}", 0,
     "tensor \"a\": shape size \"2.5\" is not an integer"},
    {"huge_size", "{\"a\":" + entry(R"("F32")", "[18446744073709551615]", "[0,0]") + "}", 0,
     "tensor \"a\": shape size 18446744073709551615 is too large"},
    {"string_size", "{\"a\":" + entry(R"("F32")", R"(["2"])", "[0,0]") + "}", 0,
     "tensor \"a\": shape sizes must be integers (found a string)"},
    {"nested_shape", "{\"a\":" + entry(R"("F32")", "[[2]]", "[0,0]") + "}", 0,
     "tensor \"a\": shape sizes must be integers (found an array)"},
    {"rank_5", "{\"a\":" + entry(R"("F32")", "[1,1,1,1,1]", "[0,4]") + "}", 4,
     "tensor \"a\": shape has more than 4 dimensions"},
    {"numel_overflow", "{\"a\":" + entry(R"("F32")", "[4294967296,4294967296]", "[0,0]") + "}", 0,
     "tensor \"a\": the element count of shape [4294967296, 4294967296] overflows"},
    {"overflow_behind_zero",
     "{\"a\":" + entry(R"("F32")", "[0,4294967296,4294967296]", "[0,0]") + "}", 0,
     "the element count of shape [0, 4294967296, 4294967296] overflows"},
    {"bytes_overflow", "{\"a\":" + entry(R"("I64")", "[4611686018427387904]", "[0,8]") + "}", 8,
     "needs 4611686018427387904 elements of 8 bytes, but data_offsets [0, 8] hold 8 bytes"},
    {"size_mismatch", "{\"a\":" + entry(R"("F32")", "[2,3]", "[0,20]") + "}", 20,
     "tensor \"a\": shape [2, 3] of F32 needs 6 elements of 4 bytes, but data_offsets [0, 20] "
     "hold 20 bytes"},
    {"scalar_size_mismatch", "{\"a\":" + entry(R"("I64")", "[]", "[0,4]") + "}", 4,
     "tensor \"a\": shape [] of I64 needs 1 elements of 8 bytes, but data_offsets [0, 4] hold "
     "4 bytes"},
    // data_offsets.
    {"one_offset", "{\"a\":" + entry(R"("F32")", "[1]", "[0]") + "}", 4,
     "tensor \"a\": data_offsets must be [begin, end], found 1 value(s)"},
    {"three_offsets", "{\"a\":" + entry(R"("F32")", "[1]", "[0,4,8]") + "}", 4,
     "tensor \"a\": data_offsets must be [begin, end], found more than 2 values"},
    {"negative_offset", "{\"a\":" + entry(R"("F32")", "[1]", "[-4,0]") + "}", 4,
     "tensor \"a\": data_offsets has a negative value -4"},
    {"fractional_offset", "{\"a\":" + entry(R"("F32")", "[1]", "[0,4.0]") + "}", 4,
     "tensor \"a\": data_offsets value \"4.0\" is not an integer"},
    {"reversed_offsets", "{\"a\":" + entry(R"("F32")", "[1]", "[4,0]") + "}", 4,
     "tensor \"a\": data_offsets [4, 0] are reversed"},
    {"overlap",
     "{\"a\":" + entry(R"("F32")", "[2]", "[0,8]") +
         ",\"b\":" + entry(R"("F32")", "[2]", "[4,12]") + "}",
     12, "tensor \"b\" (data_offsets [4, 12]) overlaps tensor \"a\" (data_offsets [0, 8])"},
    {"same_range",
     "{\"a\":" + entry(R"("F32")", "[1]", "[0,4]") + ",\"b\":" + entry(R"("F32")", "[1]", "[0,4]") +
         "}",
     4, "overlaps tensor"},
    {"gap",
     "{\"a\":" + entry(R"("F32")", "[1]", "[0,4]") +
         ",\"b\":" + entry(R"("F32")", "[1]", "[8,12]") + "}",
     12, "data_offsets leave a gap of 4 bytes before tensor \"b\" (data_offsets [8, 12])"},
    {"not_from_zero", "{\"a\":" + entry(R"("F32")", "[1]", "[4,8]") + "}", 8,
     "data_offsets leave a gap of 4 bytes before tensor \"a\""},
    {"trailing_data", "{\"a\":" + entry(R"("F32")", "[1]", "[0,4]") + "}", 8,
     "the tensors cover 4 bytes but the data section has 8"},
    {"data_without_tensors", "{}", 4, "the tensors cover 0 bytes but the data section has 4"},
    {"truncated_data", "{\"a\":" + entry(R"("F32")", "[2]", "[0,8]") + "}", 4,
     "tensor \"a\": data_offsets [0, 8] reach past the end of the data section (4 bytes); the "
     "file is truncated"},
    {"offset_far_past_end",
     "{\"a\":" + entry(R"("F32")", "[1]", "[18446744073709551611,18446744073709551615]") + "}", 0,
     "reach past the end of the data section"},
    // Duplicates, which a plain JSON parse would silently merge.
    {"duplicate_name",
     "{\"a\":" + entry(R"("F32")", "[1]", "[0,4]") + ",\"a\":" + entry(R"("F32")", "[1]", "[4,8]") +
         "}",
     8, "duplicate name \"a\" in the header"},
    {"duplicate_metadata", R"({"__metadata__":{},"__metadata__":{}})", 0,
     "duplicate name \"__metadata__\" in the header"},
    {"duplicate_metadata_key", R"({"__metadata__":{"k":"1","k":"2"}})", 0,
     "duplicate key \"k\" in __metadata__"},
    // __metadata__.
    {"metadata_string", R"({"__metadata__":"pt"})", 0,
     "__metadata__ is not an object (found a string)"},
    {"metadata_array", R"({"__metadata__":["pt"]})", 0,
     "__metadata__ is not an object (found an array)"},
    {"metadata_number_value", R"({"__metadata__":{"epoch":3}})", 0,
     "__metadata__ value for key \"epoch\" must be a string (found a number)"},
    {"metadata_nested", R"({"__metadata__":{"a":{}}})", 0,
     "__metadata__ value for key \"a\" must be a string (found an object)"},
};

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsMalformed, testing::ValuesIn(kMalformed),
                         [](const auto& param_info) {
                           return std::string(param_info.param.label);
                         });

TEST(Safetensors, RejectsFilesTooShortForTheLengthPrefix) {
  EXPECT_THAT(parse_error({}), HasSubstr("safetensors: bad.safetensors: the file is empty"));
  EXPECT_THAT(parse_error({1, 0, 0, 0, 0}),
              HasSubstr("safetensors: bad.safetensors: the file is only 5 bytes long"));
}

TEST(Safetensors, RejectsAHeaderLengthLongerThanTheFile) {
  std::vector<uint8_t> bytes = file_bytes("{}");
  bytes[0] = 200;
  EXPECT_THAT(parse_error(bytes), HasSubstr("header length 200 is longer than the 2 bytes that "
                                            "follow it; the file is truncated"));
}

TEST(Safetensors, RejectsAHeaderLengthOver100MB) {
  std::vector<uint8_t> bytes = file_bytes("{}");
  const uint64_t n = 100'000'001;
  std::memcpy(bytes.data(), &n, 8);
  EXPECT_THAT(parse_error(bytes),
              HasSubstr("header length 100000001 exceeds the limit of 100000000 bytes"));
  bytes[7] = 0xff;  // and a length near 2^64
  EXPECT_THAT(parse_error(bytes), HasSubstr("exceeds the limit"));
}

TEST(Safetensors, RejectsDeepNestingWithoutRecursing) {
  const std::string deep_array = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_THAT(parse_error(file_bytes(deep_array)), HasSubstr("the header is not a JSON object"));
  const std::string deep_shape = R"({"a":{"dtype":"F32","shape":)" + deep_array + "}}";
  EXPECT_THAT(parse_error(file_bytes(deep_shape)), HasSubstr("shape sizes must be integers"));
}

TEST(Safetensors, LongNamesAreShortenedInErrors) {
  const std::string name(10000, 'x');
  const std::string error = parse_error(file_bytes("{\"" + name + "\":1}"));
  EXPECT_THAT(error, HasSubstr("...\" (10000 characters): entry is not an object"));
  EXPECT_LT(error.size(), 400u);
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRejected) {
  const std::vector<uint8_t> bytes = serialize_safetensors(sample_tensors());
  for (size_t size = 0; size < bytes.size(); ++size) {
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(size));
    EXPECT_NE(parse_error(cut), "") << "a file cut to " << size << " bytes was accepted";
  }
}

TEST(Safetensors, CorruptingAnyByteGivesAnErrorOrAValidFile) {
  const std::vector<uint8_t> bytes = serialize_safetensors(sample_tensors());
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t value : {uint8_t{0}, uint8_t{'"'}, uint8_t{'9'}, uint8_t{0xff}}) {
      std::vector<uint8_t> corrupt = bytes;
      corrupt[i] = value;
      try {
        parse_safetensors(corrupt);
      } catch (const Error&) {
        // Rejected: fine. Anything else (another exception, a crash) fails the test.
      }
    }
  }
}

// ---- files on disk ----

TEST_F(SafetensorsFiles, SaveAndLoadRoundTrip) {
  const fs::path path = dir_ / "model.safetensors";
  save_safetensors(path.string(), sample_tensors());
  const SafetensorsFile file = load_safetensors(path.string());
  expect_same_tensors(file.tensors, sample_tensors());
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsFiles, LoadsAHandBuiltFile) {
  // Entries listed out of data order (which the reference reader allows), metadata last,
  // whitespace around tokens, a non-ASCII name, and unpadded header.
  const std::string header =
      R"( { "b" : {"shape":[],"dtype":"I64","data_offsets":[8,16]},)"
      R"( "poids_\u00e9" : {"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"( "__metadata__" : {"format":"pt","epoch":"2"} } )";
  std::vector<uint8_t> bytes = file_bytes(header);
  const float floats[2] = {1.5f, -2.0f};
  const int64_t number = -42;
  bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(floats),
               reinterpret_cast<const uint8_t*>(floats) + 8);
  bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(&number),
               reinterpret_cast<const uint8_t*>(&number) + 8);
  const fs::path path = dir_ / "hand.safetensors";
  write_bytes(path, bytes);

  const SafetensorsFile file = load_safetensors(path.string());
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].first, "b");
  EXPECT_EQ(file.tensors[0].second.shape(), Shape{});
  EXPECT_EQ(file.tensors[0].second.item_i64(), -42);
  EXPECT_EQ(file.tensors[1].first, "poids_\xc3\xa9");
  EXPECT_EQ(file.tensors[1].second.to_vector(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"epoch", "2"}}));
}

TEST_F(SafetensorsFiles, LoadNamesThePathOfAMissingFile) {
  const fs::path path = dir_ / "missing.safetensors";
  EXPECT_THAT(load_error(path), HasSubstr("safetensors: " + path.string() +
                                          ": cannot open the file: No such file or directory"));
}

TEST_F(SafetensorsFiles, LoadRejectsADirectory) {
  EXPECT_THAT(load_error(dir_), HasSubstr("safetensors: " + dir_.string() +
                                          ": is a directory, not a safetensors file"));
}

TEST_F(SafetensorsFiles, LoadRejectsAnEmptyFile) {
  const fs::path path = dir_ / "empty.safetensors";
  write_bytes(path, {});
  EXPECT_THAT(load_error(path), HasSubstr("safetensors: " + path.string() + ": the file is empty"));
}

TEST_F(SafetensorsFiles, LoadRejectsAFifoWithoutBlocking) {
  const fs::path path = dir_ / "fifo.safetensors";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  EXPECT_THAT(load_error(path), HasSubstr(": is not a regular file"));
}

TEST_F(SafetensorsFiles, LoadRejectsATruncatedFile) {
  const fs::path path = dir_ / "model.safetensors";
  save_safetensors(path.string(), sample_tensors());
  fs::resize_file(path, fs::file_size(path) - 10);
  EXPECT_THAT(load_error(path), HasSubstr("the file is truncated"));
}

TEST_F(SafetensorsFiles, SaveReplacesThePreviousFile) {
  const fs::path path = dir_ / "model.safetensors";
  save_safetensors(path.string(), {{"a", from_vector({1.0f}, {1})}});
  save_safetensors(path.string(), sample_tensors());
  expect_same_tensors(load_safetensors(path.string()).tensors, sample_tensors());
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsFiles, AtomicWriteOfNoBytesCreatesAnEmptyFile) {
  const fs::path path = dir_ / "empty.bin";
  write_file_atomic(path.string(), {});
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST_F(SafetensorsFiles, AtomicWriteIntoAMissingFolderFails) {
  const fs::path path = dir_ / "no_such_folder" / "model.safetensors";
  try {
    save_safetensors(path.string(), sample_tensors());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot write \"" + path.string() + "\""));
    EXPECT_THAT(e.what(), HasSubstr("No such file or directory"));
  }
  EXPECT_TRUE(entries(dir_).empty());
}

TEST_F(SafetensorsFiles, FailedWriteKeepsThePreviousFile) {
  // A file size limit makes write() fail half way (EFBIG), even for root.
  const fs::path path = dir_ / "model.safetensors";
  save_safetensors(path.string(), {{"a", from_vector({1.0f}, {1})}});
  const std::vector<uint8_t> before = read_bytes(path);

  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct sigaction ignore {
  }, saved_action{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGXFSZ, &ignore, &saved_action), 0);
  rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);

  std::string error;
  try {
    save_safetensors(path.string(), {{"big", zeros({64, 1024})}});
  } catch (const Error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::sigaction(SIGXFSZ, &saved_action, nullptr);

  EXPECT_THAT(error,
              HasSubstr("cannot write \"" + path.string() + "\": write failed: File too large"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsFiles, FailedWriteIntoAReadOnlyFolderKeepsThePreviousFile) {
  const fs::path path = dir_ / "model.safetensors";
  save_safetensors(path.string(), {{"a", from_vector({1.0f}, {1})}});
  const std::vector<uint8_t> before = read_bytes(path);
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  if (::access(dir_.c_str(), W_OK) == 0) {
    GTEST_SKIP() << "permissions are not enforced for this user (root)";
  }
  try {
    save_safetensors(path.string(), sample_tensors());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot write \"" + path.string() + "\""));
    EXPECT_THAT(e.what(), HasSubstr("Permission denied"));
  }
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsFiles, FailedRenameOverAFolderRemovesTheTemporaryFile) {
  const fs::path path = dir_ / "checkpoint";
  fs::create_directory(path);
  try {
    save_safetensors(path.string(), sample_tensors());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot write \"" + path.string() + "\": rename failed: "));
  }
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"checkpoint"});
  EXPECT_TRUE(entries(path).empty());
}

}  // namespace
}  // namespace ink
