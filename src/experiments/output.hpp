#pragma once
// What every experiment writes: CSV tables, PNG plots drawn by gnuplot from
// those tables, and a Markdown report whose conclusions are computed from the
// measured numbers by the experiment itself.
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "bnorm/io/dataset.hpp"

namespace bnorm::exp {

// Everything an experiment needs from the command line, and the data loaded once.
struct Context {
  bool quick = false;
  std::string out_dir = "reports";
  std::uint64_t seed = 0;
  int threads = 1;
  std::string command_line;  // as typed, for the report
  Dataset train, test;
};

// The data an experiment trains and tests on: all of ctx's, or with --quick
// the first quick_train training and 1000 test examples.
struct Datasets {
  Dataset train, test;
};
Datasets datasets(const Context& ctx, std::int64_t quick_train);

// A number for tables and CSV: "nan"/"inf" for non-finite values, else
// printf("%.<digits>g").
std::string num(double v, int digits = 4);
// Fixed decimals, for accuracies in prose: fixed(0.86123, 3) = "0.861".
std::string fixed(double v, int decimals = 3);

// Writes a CSV file row by row: a header, then rows of the same width. Text
// fields holding a comma, quote or newline are quoted (quotes doubled).
class CsvWriter {
 public:
  CsvWriter(std::string path, std::vector<std::string> header);
  void row(const std::vector<std::string>& cells);  // throws Error on a width mismatch
  void close();                                     // flushes; throws Error naming the file if writing failed
  ~CsvWriter();

 private:
  std::string path_;
  std::size_t width_;
  std::ofstream out_;
};
std::string csv_field(const std::string& text);

// One line of a plot: columns x_col and y_col (1-based) of a CSV file, only
// the rows whose first column equals `run` (all rows when run is empty).
// A run's rows must be contiguous in the file: gnuplot's lines stop at every
// row of another run.
struct Series {
  Series(std::string csv_file, std::string run_key, int x, int y, std::string title_text, std::string style_text = "")
      : csv(std::move(csv_file)),
        run(std::move(run_key)),
        x_col(x),
        y_col(y),
        title(std::move(title_text)),
        style(std::move(style_text)) {}
  std::string csv;  // file name inside the experiment's folder
  std::string run;
  int x_col = 2, y_col = 3;
  std::string title;
  std::string style;  // gnuplot "with" clause; empty = the figure's lines or linespoints
};

struct Figure {
  Figure(std::string png_name, std::string title_text, std::string x_label, std::string y_label)
      : png(std::move(png_name)),
        title(std::move(title_text)),
        xlabel(std::move(x_label)),
        ylabel(std::move(y_label)) {}
  std::string png;  // file name inside the experiment's folder
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  int logx_base = 10;
  std::string xrange, yrange;  // gnuplot ranges like "[0:2.5]"; empty = automatic
  bool points = false;         // linespoints instead of lines
  std::vector<Series> series;
};

// The gnuplot script for a figure (written beside the PNG as <png>.gp).
std::string gnuplot_script(const Figure& figure);
// Writes the script and runs gnuplot in dir; throws Error if it fails.
void render(const Figure& figure, const std::string& dir);
// Throws Error (naming gnuplot and the package) unless gnuplot with the
// pngcairo terminal can be run.
void require_gnuplot();

// CPU model from /proc/cpuinfo and the number of cores.
std::string machine_description();
std::string utc_now();

// A Markdown report: conclusions first, then the sections with plots and
// tables, then how the run was made.
class Report {
 public:
  Report(std::string title, std::string summary) : title_(std::move(title)), summary_(std::move(summary)) {}
  void conclusion(const std::string& sentence) { conclusions_.push_back(sentence); }
  void section(const std::string& heading) { body_ += "\n## " + heading + "\n\n"; }
  void text(const std::string& markdown) { body_ += markdown + "\n\n"; }
  void image(const std::string& png, const std::string& caption) { body_ += "![" + caption + "](" + png + ")\n\n"; }
  void table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
  // Writes dir/report.md with the run's command, seed, machine, date and duration.
  void write(const std::string& dir, const Context& ctx, double seconds) const;
  const std::vector<std::string>& conclusions() const { return conclusions_; }

 private:
  std::string title_, summary_, body_;
  std::vector<std::string> conclusions_;
};

}  // namespace bnorm::exp
