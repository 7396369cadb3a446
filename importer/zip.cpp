// Zip reading and writing for .pth archives: every offset and size read from the file is checked
// against the buffer before use, so damaged or hostile archives end in an Error, never UB.
#include "importer/zip.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "nnx/error.h"

namespace nnx::zip {

static_assert(std::endian::native == std::endian::little,
              "the zip code assumes a little-endian host");

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kLocator64Sig = 0x07064b50;
constexpr size_t kLocalSize = 30;
constexpr size_t kCentralSize = 46;
constexpr size_t kEndSize = 22;
constexpr size_t kEnd64Size = 56;
constexpr size_t kLocator64Size = 20;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint16_t kMax16 = 0xffffu;
// zlib counts in uInt; feed it at most this much at a time.
constexpr size_t kZlibChunk = size_t(1) << 30;

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
void store(std::string& out, T v) {
  char b[sizeof v];
  std::memcpy(b, &v, sizeof v);
  out.append(b, sizeof v);
}

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// True when [offset, offset + length) lies inside [0, limit).
bool fits(uint64_t offset, uint64_t length, uint64_t limit) {
  return offset <= limit && length <= limit - offset;
}

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  auto p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (size > 0) {
    size_t n = std::min(size, kZlibChunk);
    c = ::crc32(c, p, static_cast<uInt>(n));
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

// ---- Reader ---------------------------------------------------------------------------------

Reader::Reader(const void* data, size_t size, std::string name_for_errors)
    : data_(static_cast<const uint8_t*>(data)), size_(size), name_(std::move(name_for_errors)) {
  parse();
}

void Reader::fail_format(const std::string& what) const {
  fail(ErrorKind::format, name_, ": ", what);
}

void Reader::parse() {
  if (size_ < kEndSize) {
    fail_format(detail::concat("not a zip archive: the file has ", size_,
                               " bytes, fewer than an end-of-central-directory record (22)"));
  }
  // The end record sits at the end, followed only by its comment (at most 65535 bytes). Prefer a
  // record whose comment reaches exactly to the end; signature bytes inside a comment would
  // otherwise be mistaken for it.
  size_t end_pos = SIZE_MAX, fallback = SIZE_MAX;
  size_t lowest = size_ - kEndSize > 0xffff ? size_ - kEndSize - 0xffff : 0;
  for (size_t pos = size_ - kEndSize + 1; pos-- > lowest;) {
    if (load<uint32_t>(data_ + pos) != kEndSig) continue;
    size_t comment = load<uint16_t>(data_ + pos + 20);
    if (pos + kEndSize + comment == size_) {
      end_pos = pos;
      break;
    }
    if (fallback == SIZE_MAX && pos + kEndSize + comment <= size_) fallback = pos;
  }
  if (end_pos == SIZE_MAX) end_pos = fallback;
  if (end_pos == SIZE_MAX) {
    fail_format(
        detail::concat("truncated or not a zip archive: no end-of-central-directory "
                       "record in the last 65557 bytes (file size ",
                       size_, ")"));
  }
  const uint8_t* end = data_ + end_pos;
  uint16_t disk = load<uint16_t>(end + 4), cd_disk = load<uint16_t>(end + 6);
  uint64_t count_disk = load<uint16_t>(end + 8), count = load<uint16_t>(end + 10);
  uint64_t cd_size = load<uint32_t>(end + 12), cd_offset = load<uint32_t>(end + 16);
  uint64_t cd_limit = end_pos;  // the central directory ends before this

  bool has_locator = end_pos >= kLocator64Size &&
                     load<uint32_t>(data_ + end_pos - kLocator64Size) == kLocator64Sig;
  bool needs_zip64 = count == kMax16 || count_disk == kMax16 || cd_size == kMax32 ||
                     cd_offset == kMax32 || disk == kMax16 || cd_disk == kMax16;
  if (needs_zip64 && !has_locator) {
    fail_format(
        detail::concat("truncated zip: the end-of-central-directory record at offset ", end_pos,
                       " defers to zip64 records, but there is no zip64 locator before it"));
  }
  if (has_locator) {
    size_t loc_pos = end_pos - kLocator64Size;
    const uint8_t* loc = data_ + loc_pos;
    uint64_t rec_pos = load<uint64_t>(loc + 8);
    uint32_t disks = load<uint32_t>(loc + 16);
    if (disks > 1)
      fail_format(detail::concat("multi-disk zip archives are not supported (", disks, " disks)"));
    if (!fits(rec_pos, kEnd64Size, loc_pos)) {
      fail_format(detail::concat("truncated zip: zip64 end-of-central-directory record at offset ",
                                 rec_pos, " does not fit before its locator at offset ", loc_pos));
    }
    const uint8_t* rec = data_ + rec_pos;
    if (load<uint32_t>(rec) != kEnd64Sig) {
      fail_format(detail::concat("bad zip64 end-of-central-directory record at offset ", rec_pos,
                                 ": signature ", hex(load<uint32_t>(rec)), ", expected ",
                                 hex(kEnd64Sig)));
    }
    disk = load<uint32_t>(rec + 16) != 0 ? 1 : 0;
    cd_disk = load<uint32_t>(rec + 20) != 0 ? 1 : 0;
    count_disk = load<uint64_t>(rec + 24);
    count = load<uint64_t>(rec + 32);
    cd_size = load<uint64_t>(rec + 40);
    cd_offset = load<uint64_t>(rec + 48);
    cd_limit = rec_pos;
  }
  if (disk != 0 || cd_disk != 0 || count_disk != count) {
    fail_format("multi-disk zip archives are not supported");
  }
  if (cd_offset > cd_limit) {
    fail_format(detail::concat("truncated zip: central directory at offset ", cd_offset,
                               " past end of file (size ", size_, ")"));
  }
  if (!fits(cd_offset, cd_size, cd_limit)) {
    fail_format(detail::concat(
        "truncated zip: central directory of ", cd_size, " bytes at offset ", cd_offset,
        " runs past the end-of-central-directory record at offset ", cd_limit));
  }
  if (count > cd_size / kCentralSize) {
    fail_format(detail::concat("bad zip: ", count, " entries cannot fit in a central directory of ",
                               cd_size, " bytes"));
  }

  entries_.reserve(count);
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!fits(pos, kCentralSize, cd_end)) {
      fail_format(detail::concat("truncated zip: central directory entry ", i, " at offset ", pos,
                                 " runs past the directory's end at offset ", cd_end));
    }
    const uint8_t* h = data_ + pos;
    if (load<uint32_t>(h) != kCentralSig) {
      fail_format(detail::concat("bad zip: central directory entry ", i, " at offset ", pos,
                                 " has signature ", hex(load<uint32_t>(h)), ", expected ",
                                 hex(kCentralSig)));
    }
    uint16_t flags = load<uint16_t>(h + 8);
    Entry e;
    e.method = load<uint16_t>(h + 10);
    e.crc32 = load<uint32_t>(h + 16);
    e.compressed_size = load<uint32_t>(h + 20);
    e.uncompressed_size = load<uint32_t>(h + 24);
    size_t name_len = load<uint16_t>(h + 28), extra_len = load<uint16_t>(h + 30),
           comment_len = load<uint16_t>(h + 32);
    uint32_t start_disk = load<uint16_t>(h + 34);
    e.local_header_offset = load<uint32_t>(h + 42);
    uint64_t var_len = uint64_t(name_len) + extra_len + comment_len;
    if (!fits(pos + kCentralSize, var_len, cd_end)) {
      fail_format(
          detail::concat("truncated zip: the name, extra field and comment of central "
                         "directory entry ",
                         i, " at offset ", pos, " run past the directory's end"));
    }
    e.name.assign(reinterpret_cast<const char*>(h + kCentralSize), name_len);
    // zip64 extra field: 64-bit values, present only for the fields saturated above.
    const uint8_t* x = h + kCentralSize + name_len;
    size_t xpos = 0;
    bool want_usize = e.uncompressed_size == kMax32, want_csize = e.compressed_size == kMax32,
         want_offset = e.local_header_offset == kMax32, want_disk = start_disk == kMax16;
    while (xpos + 4 <= extra_len) {
      uint16_t id = load<uint16_t>(x + xpos), len = load<uint16_t>(x + xpos + 2);
      if (xpos + 4 + len > extra_len) {
        fail_format(detail::concat("bad zip: extra field of entry '", e.name,
                                   "' runs past its declared length"));
      }
      if (id == 0x0001) {
        const uint8_t* f = x + xpos + 4;
        size_t avail = len, at = 0;
        auto take64 = [&](uint64_t& dst, const char* what) {
          if (at + 8 > avail) {
            fail_format(detail::concat("bad zip: zip64 extra field of entry '", e.name,
                                       "' has no room for its ", what));
          }
          dst = load<uint64_t>(f + at);
          at += 8;
        };
        if (want_usize) take64(e.uncompressed_size, "uncompressed size");
        if (want_csize) take64(e.compressed_size, "compressed size");
        if (want_offset) take64(e.local_header_offset, "local header offset");
        want_usize = want_csize = want_offset = false;
        if (want_disk) {
          if (at + 4 > avail) {
            fail_format(detail::concat("bad zip: zip64 extra field of entry '", e.name,
                                       "' has no room for its disk number"));
          }
          start_disk = load<uint32_t>(f + at);
          want_disk = false;
        }
      }
      xpos += 4 + size_t(len);
    }
    if (want_usize || want_csize || want_offset) {
      fail_format(detail::concat("bad zip: entry '", e.name,
                                 "' has 32-bit fields saturated to 0xffffffff but no zip64 extra "
                                 "field holding their values"));
    }
    if (start_disk != 0 && start_disk != kMax16) {
      fail_format(detail::concat("entry '", e.name, "' is on disk ", start_disk,
                                 ": multi-disk zip archives are not supported"));
    }
    if (flags & 0x0001) fail_format(detail::concat("entry '", e.name, "' is encrypted"));
    if (e.method != 0 && e.method != 8) {
      fail_format(detail::concat("entry '", e.name, "' uses compression method ", e.method,
                                 "; only stored (0) and deflated (8) are supported"));
    }
    // Deflate expands at most ~1032x: larger claims are lies that would make readers allocate
    // memory no stream of this length can fill.
    if (e.method == 8 && e.uncompressed_size / 1100 > e.compressed_size + 1) {
      fail_format(detail::concat("bad zip: deflated entry '", e.name, "' claims ",
                                 e.uncompressed_size, " bytes from only ", e.compressed_size,
                                 " compressed bytes"));
    }
    if (e.method == 0 && e.compressed_size != e.uncompressed_size) {
      fail_format(detail::concat("bad zip: stored entry '", e.name, "' has compressed size ",
                                 e.compressed_size, " but uncompressed size ",
                                 e.uncompressed_size));
    }
    // The local header may carry its own extra field (torch's alignment padding), so the data
    // starts where the local header says.
    if (!fits(e.local_header_offset, kLocalSize, cd_offset)) {
      fail_format(detail::concat(
          "truncated zip: local header of '", e.name, "' at offset ", e.local_header_offset,
          " lies past the start of the central directory at offset ", cd_offset));
    }
    const uint8_t* lh = data_ + e.local_header_offset;
    if (load<uint32_t>(lh) != kLocalSig) {
      fail_format(detail::concat("bad zip: local header of '", e.name, "' at offset ",
                                 e.local_header_offset, " has signature ", hex(load<uint32_t>(lh)),
                                 ", expected ", hex(kLocalSig)));
    }
    size_t lname = load<uint16_t>(lh + 26), lextra = load<uint16_t>(lh + 28);
    if (!fits(e.local_header_offset + kLocalSize, uint64_t(lname) + lextra, cd_offset)) {
      fail_format(detail::concat("truncated zip: local header of '", e.name,
                                 "' runs into the central directory"));
    }
    if (lname != name_len || std::memcmp(lh + kLocalSize, e.name.data(), name_len) != 0) {
      fail_format(detail::concat("bad zip: local header at offset ", e.local_header_offset,
                                 " names '",
                                 std::string(reinterpret_cast<const char*>(lh + kLocalSize), lname),
                                 "' but the central directory names '", e.name, "'"));
    }
    e.data_offset = e.local_header_offset + kLocalSize + lname + lextra;
    if (!fits(e.data_offset, e.compressed_size, cd_offset)) {
      fail_format(detail::concat("truncated zip: the ", e.compressed_size, " bytes of '", e.name,
                                 "' at offset ", e.data_offset,
                                 " run past the start of the central directory at offset ",
                                 cd_offset, " (file size ", size_, ")"));
    }
    if (!index_.emplace(e.name, entries_.size()).second) {
      fail_format(detail::concat("bad zip: entry '", e.name, "' appears twice"));
    }
    entries_.push_back(std::move(e));
    pos += kCentralSize + var_len;
  }
}

const Entry* Reader::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void Reader::extract(const Entry& e, void* dst, size_t dst_size) const {
  if (dst_size != e.uncompressed_size) {
    fail(ErrorKind::usage, name_, ": '", e.name, "' holds ", e.uncompressed_size,
         " bytes, asked to extract into ", dst_size);
  }
  const uint8_t* src = data_ + e.data_offset;
  auto* out = static_cast<uint8_t*>(dst);
  if (e.method == 0) {
    if (dst_size > 0) std::memcpy(out, src, dst_size);
  } else {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) {
      fail(ErrorKind::device, name_, ": zlib could not initialise an inflate stream");
    }
    uint64_t in_left = e.compressed_size, out_left = dst_size;
    int rc = Z_OK;
    uint8_t spill;  // catches output beyond the declared size
    z.next_in = const_cast<Bytef*>(src);
    z.next_out = out;
    while (true) {
      if (z.avail_in == 0 && in_left > 0) {
        z.avail_in = static_cast<uInt>(std::min<uint64_t>(in_left, kZlibChunk));
        in_left -= z.avail_in;
      }
      if (z.avail_out == 0) {
        if (out_left > 0) {
          z.avail_out = static_cast<uInt>(std::min<uint64_t>(out_left, kZlibChunk));
          out_left -= z.avail_out;
        } else {
          z.next_out = &spill;
          z.avail_out = 1;
        }
      }
      bool spilling = z.next_out == &spill;
      rc = inflate(&z, Z_NO_FLUSH);
      if (spilling && z.avail_out == 0) {
        inflateEnd(&z);
        fail_format(detail::concat("deflated entry '", e.name, "' inflates to more than its ",
                                   e.uncompressed_size, " declared bytes"));
      }
      if (rc == Z_STREAM_END) break;
      if (rc == Z_BUF_ERROR && z.avail_in == 0 && in_left == 0) {
        inflateEnd(&z);
        fail_format(detail::concat("deflated entry '", e.name,
                                   "' ends before its deflate stream does (truncated data)"));
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        std::string msg = z.msg ? z.msg : "error " + std::to_string(rc);
        inflateEnd(&z);
        fail_format(
            detail::concat("deflated entry '", e.name, "' has bad data: zlib says '", msg, "'"));
      }
    }
    uint64_t produced = z.total_out;
    inflateEnd(&z);
    if (produced != e.uncompressed_size) {
      fail_format(detail::concat("deflated entry '", e.name, "' inflates to ", produced,
                                 " bytes, expected ", e.uncompressed_size));
    }
  }
  check_crc(e, out, dst_size);
}

void Reader::check_crc(const Entry& e, const void* bytes, size_t size) const {
  // torch.save can be told not to compute CRCs (torch.serialization.set_crc32_options), and
  // then records 0: that means "not recorded", not "corrupt".
  if (e.crc32 == 0) return;
  uint32_t crc = crc32(bytes, size);
  if (crc != e.crc32) {
    fail_format(detail::concat("CRC mismatch in '", e.name, "': the archive records ", hex(e.crc32),
                               ", the data has ", hex(crc)));
  }
}

std::string Reader::read(const Entry& e) const {
  if (e.uncompressed_size > std::numeric_limits<size_t>::max() / 2) {
    fail_format(detail::concat("entry '", e.name, "' claims ", e.uncompressed_size, " bytes"));
  }
  std::string out(e.uncompressed_size, '\0');
  extract(e, out.data(), out.size());
  return out;
}

// ---- Writer ---------------------------------------------------------------------------------

Writer::Writer(Sink sink, size_t alignment, bool force_zip64)
    : sink_(std::move(sink)),
      alignment_(std::max<size_t>(alignment, 1)),
      force_zip64_(force_zip64) {
  NNX_CHECK(alignment_ <= 0x8000, ErrorKind::usage, "zip alignment ", alignment_, " too large");
}

void Writer::emit(const void* data, size_t size) {
  if (size == 0) return;
  sink_(data, size);
  offset_ += size;
}

namespace {
std::string deflate_bytes(const void* data, size_t size) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    fail(ErrorKind::device, "zlib could not initialise a deflate stream");
  }
  std::string out;
  const auto* in = static_cast<const Bytef*>(data);
  size_t in_left = size;
  char buf[1 << 16];
  int rc;
  do {
    if (z.avail_in == 0 && in_left > 0) {
      z.next_in = const_cast<Bytef*>(in);
      z.avail_in = static_cast<uInt>(std::min(in_left, kZlibChunk));
      in += z.avail_in;
      in_left -= z.avail_in;
    }
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = deflate(&z, in_left == 0 ? Z_FINISH : Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
  } while (rc == Z_OK || rc == Z_BUF_ERROR);
  deflateEnd(&z);
  NNX_CHECK(rc == Z_STREAM_END, ErrorKind::device, "zlib deflate failed (", rc, ")");
  return out;
}
}  // namespace

void Writer::add(const std::string& name, const void* data, size_t size, Method method) {
  NNX_CHECK(!finished_, ErrorKind::usage, "zip writer: add('", name, "') after finish()");
  NNX_CHECK(!name.empty() && name.size() <= 0xffff, ErrorKind::usage,
            "zip writer: bad entry name length ", name.size());
  std::string packed;
  const void* payload = data;
  uint64_t csize = size;
  if (method == Method::deflated) {
    packed = deflate_bytes(data, size);
    payload = packed.data();
    csize = packed.size();
  }
  Entry e;
  e.name = name;
  e.method = method == Method::deflated ? 8 : 0;
  e.crc32 = crc32(data, size);
  e.uncompressed_size = size;
  e.compressed_size = csize;
  e.local_header_offset = offset_;
  bool zip64 = force_zip64_ || size >= kMax32 || csize >= kMax32;
  bool utf8 = std::any_of(name.begin(), name.end(), [](char c) { return c & 0x80; });

  std::string h;
  store<uint32_t>(h, kLocalSig);
  store<uint16_t>(h, zip64 ? 45 : 20);
  store<uint16_t>(h, utf8 ? 0x0800 : 0);
  store<uint16_t>(h, e.method);
  store<uint16_t>(h, 0);       // time 00:00
  store<uint16_t>(h, 0x0021);  // date 1980-01-01: fixed, so output is reproducible
  store<uint32_t>(h, e.crc32);
  store<uint32_t>(h, zip64 ? kMax32 : uint32_t(csize));
  store<uint32_t>(h, zip64 ? kMax32 : uint32_t(size));
  store<uint16_t>(h, uint16_t(name.size()));
  std::string extra;
  if (zip64) {
    store<uint16_t>(extra, 0x0001);
    store<uint16_t>(extra, 16);
    store<uint64_t>(extra, size);
    store<uint64_t>(extra, csize);
  }
  // Pad with an "FB" extra field up to the alignment, as torch.save does, so that readers can
  // map tensor data in place.
  uint64_t data_start = offset_ + kLocalSize + name.size() + extra.size();
  size_t pad = (alignment_ - data_start % alignment_) % alignment_;
  if (pad > 0 && pad < 4) pad += alignment_;
  if (pad > 0) {
    store<uint16_t>(extra, 0x4246);  // "FB"
    store<uint16_t>(extra, uint16_t(pad - 4));
    extra.append(pad - 4, 'Z');
  }
  store<uint16_t>(h, uint16_t(extra.size()));
  h += name;
  h += extra;
  emit(h.data(), h.size());
  e.data_offset = offset_;
  emit(payload, csize);
  entries_.push_back(std::move(e));
}

void Writer::finish() {
  NNX_CHECK(!finished_, ErrorKind::usage, "zip writer: finish() called twice");
  finished_ = true;
  uint64_t cd_offset = offset_;
  for (const Entry& e : entries_) {
    bool big_usize = force_zip64_ || e.uncompressed_size >= kMax32;
    bool big_csize = force_zip64_ || e.compressed_size >= kMax32;
    bool big_offset = force_zip64_ || e.local_header_offset >= kMax32;
    std::string extra;
    if (big_usize || big_csize || big_offset) {
      store<uint16_t>(extra, 0x0001);
      store<uint16_t>(extra, uint16_t(8 * (big_usize + big_csize + big_offset)));
      if (big_usize) store<uint64_t>(extra, e.uncompressed_size);
      if (big_csize) store<uint64_t>(extra, e.compressed_size);
      if (big_offset) store<uint64_t>(extra, e.local_header_offset);
    }
    bool utf8 = std::any_of(e.name.begin(), e.name.end(), [](char c) { return c & 0x80; });
    std::string h;
    store<uint32_t>(h, kCentralSig);
    store<uint16_t>(h, extra.empty() ? 20 : 45);  // made by
    store<uint16_t>(h, extra.empty() ? 20 : 45);  // needed
    store<uint16_t>(h, utf8 ? 0x0800 : 0);
    store<uint16_t>(h, e.method);
    store<uint16_t>(h, 0);
    store<uint16_t>(h, 0x0021);
    store<uint32_t>(h, e.crc32);
    store<uint32_t>(h, big_csize ? kMax32 : uint32_t(e.compressed_size));
    store<uint32_t>(h, big_usize ? kMax32 : uint32_t(e.uncompressed_size));
    store<uint16_t>(h, uint16_t(e.name.size()));
    store<uint16_t>(h, uint16_t(extra.size()));
    store<uint16_t>(h, 0);  // comment
    store<uint16_t>(h, 0);  // disk
    store<uint16_t>(h, 0);  // internal attributes
    store<uint32_t>(h, 0);  // external attributes
    store<uint32_t>(h, big_offset ? kMax32 : uint32_t(e.local_header_offset));
    h += e.name;
    h += extra;
    emit(h.data(), h.size());
  }
  uint64_t cd_size = offset_ - cd_offset;
  uint64_t count = entries_.size();
  bool zip64 = force_zip64_ || count >= kMax16 || cd_size >= kMax32 || cd_offset >= kMax32;
  std::string t;
  if (zip64) {
    uint64_t rec_pos = offset_;
    store<uint32_t>(t, kEnd64Sig);
    store<uint64_t>(t, kEnd64Size - 12);
    store<uint16_t>(t, 45);
    store<uint16_t>(t, 45);
    store<uint32_t>(t, 0);
    store<uint32_t>(t, 0);
    store<uint64_t>(t, count);
    store<uint64_t>(t, count);
    store<uint64_t>(t, cd_size);
    store<uint64_t>(t, cd_offset);
    store<uint32_t>(t, kLocator64Sig);
    store<uint32_t>(t, 0);
    store<uint64_t>(t, rec_pos);
    store<uint32_t>(t, 1);
  }
  store<uint32_t>(t, kEndSig);
  store<uint16_t>(t, 0);
  store<uint16_t>(t, 0);
  store<uint16_t>(t, zip64 ? kMax16 : uint16_t(count));
  store<uint16_t>(t, zip64 ? kMax16 : uint16_t(count));
  store<uint32_t>(t, zip64 ? kMax32 : uint32_t(cd_size));
  store<uint32_t>(t, zip64 ? kMax32 : uint32_t(cd_offset));
  store<uint16_t>(t, 0);
  emit(t.data(), t.size());
}

// ---- atomic files ----------------------------------------------------------------------------

void write_file_atomically(const std::string& path,
                           const std::function<void(const Writer::Sink&)>& produce) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(ErrorKind::io, "cannot write '", path, "': ", std::strerror(errno));
  try {
    produce([&](const void* data, size_t size) {
      if (size > 0 && std::fwrite(data, 1, size, f) != size) {
        fail(ErrorKind::io, "cannot write '", path, "': ", std::strerror(errno));
      }
    });
    if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) {
      fail(ErrorKind::io, "cannot write '", path, "': ", std::strerror(errno));
    }
    std::FILE* done = f;
    f = nullptr;
    if (std::fclose(done) != 0) {
      fail(ErrorKind::io, "cannot write '", path, "': ", std::strerror(errno));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      fail(ErrorKind::io, "cannot rename '", tmp, "' to '", path, "': ", std::strerror(errno));
    }
  } catch (...) {
    if (f) std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  write_file_atomically(path, [&](const Writer::Sink& sink) { sink(bytes.data(), bytes.size()); });
}

}  // namespace nnx::zip
