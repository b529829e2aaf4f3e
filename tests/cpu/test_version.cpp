// flare_version / flare_build_info (src/api/version.cpp) and their C++ wrappers: the version
// matches flare.h's macros, and the build info is well-formed `key=value` lines carrying this
// build's configuration (flare_build_config.h, the same generated header the library uses).
#include <cuda_runtime_api.h>  // CUDART_VERSION
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "flare/flare.hpp"
#include "flare_build_config.h"

namespace {

struct Line {
  std::string key, value;
};

// Splits the text into lines; every line must end in '\n' and hold exactly one '='.
std::vector<Line> parse(const std::string& text) {
  std::vector<Line> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    EXPECT_NE(end, std::string::npos) << "last line has no newline: " << text.substr(start);
    if (end == std::string::npos) break;
    const std::string line = text.substr(start, end - start);
    const size_t eq = line.find('=');
    EXPECT_NE(eq, std::string::npos) << "no '=' in line '" << line << "'";
    EXPECT_EQ(line.find('=', eq + 1), std::string::npos) << "two '=' in line '" << line << "'";
    if (eq != std::string::npos) lines.push_back({line.substr(0, eq), line.substr(eq + 1)});
    start = end + 1;
  }
  return lines;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) parts.push_back(part);
  return parts;
}

TEST(Version, MatchesHeaderMacros) {
  const std::string expected = std::to_string(FLARE_VERSION_MAJOR) + "." +
                               std::to_string(FLARE_VERSION_MINOR) + "." +
                               std::to_string(FLARE_VERSION_PATCH);
  ASSERT_NE(flare_version(), nullptr);
  EXPECT_EQ(std::string(flare_version()), expected);
  EXPECT_EQ(flare::version(), expected);
  // Static storage: the same pointer every call.
  EXPECT_EQ(flare_version(), flare_version());
}

TEST(BuildInfo, KeysInDocumentedOrder) {
  ASSERT_NE(flare_build_info(), nullptr);
  const std::vector<Line> lines = parse(flare_build_info());
  const std::vector<std::string> keys = {"version", "cuda_runtime", "archs",
                                         "dtypes",  "head_dims",    "tuning"};
  ASSERT_EQ(lines.size(), keys.size()) << flare_build_info();
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(lines[i].key, keys[i]);
    EXPECT_FALSE(lines[i].value.empty()) << keys[i];
  }
  EXPECT_EQ(flare::build_info(), std::string(flare_build_info()));
}

TEST(BuildInfo, ValuesDescribeThisBuild) {
  std::map<std::string, std::string> info;
  for (const Line& l : parse(flare_build_info())) info[l.key] = l.value;

  EXPECT_EQ(info["version"], std::string(flare_version()));
  EXPECT_EQ(info["cuda_runtime"], std::to_string(CUDART_VERSION / 1000) + "." +
                                      std::to_string(CUDART_VERSION % 1000 / 10));
  EXPECT_EQ(info["archs"], FLARE_BUILD_ARCHS);
  EXPECT_EQ(info["dtypes"], FLARE_BUILD_DTYPES);
  EXPECT_EQ(info["head_dims"], FLARE_BUILD_HEAD_DIMS);
  EXPECT_TRUE(info["tuning"] == "on" || info["tuning"] == "off") << info["tuning"];

  // Every listed value is one the build system accepts.
  for (const std::string& a : split(info["archs"], ';'))
    EXPECT_TRUE(a == "80" || a == "90a") << "arch '" << a << "'";
  for (const std::string& d : split(info["dtypes"], ';'))
    EXPECT_TRUE(d == "fp16" || d == "bf16") << "dtype '" << d << "'";
  for (const std::string& h : split(info["head_dims"], ';')) {
    const int hd = std::stoi(h);
    EXPECT_TRUE(hd == 32 || hd == 64 || hd == 96 || hd == 128 || hd == 192 || hd == 256 ||
                hd == 512)
        << "head dim '" << h << "'";
  }
}

}  // namespace
