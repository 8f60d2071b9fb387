#pragma once
// Comma-separated tables with a header line, as spreadsheets and pandas write
// them: RFC 4180 quoting (commas, doubled quotes and newlines inside quotes),
// CRLF or LF, an optional UTF-8 byte order mark, blank lines skipped and
// spaces around cells trimmed. The table is text; callers decide which
// columns are numbers (csv_number) and which are labels.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bnorm {

struct CsvTable {
  std::vector<std::string> header;  // column names, trimmed
  std::int64_t rows = 0;
  std::vector<std::string> cells;  // rows * header.size(), row-major, unquoted, trimmed
  std::vector<std::int64_t> line;  // 1-based line of the file where each row starts
  std::int64_t cols() const { return static_cast<std::int64_t>(header.size()); }
  const std::string& cell(std::int64_t row, std::int64_t col) const;  // throws Error when out of range
  std::int64_t column(const std::string& name) const;                 // index, or -1
};

// Throws Error("<name>: line L...: <problem>") for a table that is not
// rectangular, has an empty cell or column name, or is not text.
CsvTable parse_csv(std::string_view text, const std::string& name);
// Plain or gzipped (recognised by its magic bytes).
CsvTable read_csv(const std::string& path);

// A cell as a finite double. Throws Error naming the file, line, 1-based
// column and column name: "'abc' is not a number", or "non-finite value 'nan'".
double csv_number(const CsvTable& t, std::int64_t row, std::int64_t col, const std::string& name);

// "3", "-2", "+7" are; "3.0", "1e3", "" are not.
bool csv_is_integer(std::string_view cell);

}  // namespace bnorm
