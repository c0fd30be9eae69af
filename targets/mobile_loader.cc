// edgeattn mobile loader -- runs a Relax VM executable exported by
// `tvm.compile(...).export_library("model.so")` with TVM 0.27 / tvm-ffi 0.1.14.
//
// Needs at run time only: model.so, libtvm_runtime.so, libtvm_ffi.so (+ libc/libstdc++).
// No Python, no TVM compiler.
//
// Usage:
//   loader MODEL.so [options] INPUT [INPUT ...]
//     INPUT        := FILE.npy                       (dtype/shape from the .npy header)
//                   | FILE:DTYPE:D0xD1x...           (raw little-endian C-order data,
//                                                     e.g. x.bin:float32:1x128x384,
//                                                     scalar: x.bin:int64:)
//   options:
//     --func NAME      Relax function to run (default: main)
//     --out DIR        output directory (default: .)  -> DIR/output_<i>.bin (raw float32),
//                      DIR/output_<i>.npy (float32), DIR/outputs.txt (index dtype shape)
//     --alloc naive|pooled   VM memory allocator (default: pooled, same as Python default)
//     --repeat N       run N extra timed iterations after the first run, print mean ms
//     --threads N      size TVM's CPU thread pool (runtime.config_threadpool, share-all-cores mode
//                      over this process's affinity CPUs, like edgeattn's Python tvm backend);
//                      default: TVM's own default (TVM_NUM_THREADS / OMP_NUM_THREADS / cores)
//
// Header-only use of tvm-ffi; links against libtvm_ffi.so (ffi::Module::LoadFromFile, errors,
// dtype parsing) and libtvm_runtime.so (registers the relax.VMExecutable loader + the VM;
// no symbol of it is referenced directly -> must be linked with -Wl,--no-as-needed).

#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <limits.h>
#include <sched.h>
#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

// ---------------------------------------------------------------- allocation
// 64-byte aligned host allocation (TVM's kAllocAlignment is 64; TIR kernels may assume it).
struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    size_t nbytes = ffi::GetDataSize(*t);
    size_t rounded = (nbytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    t->data = std::aligned_alloc(64, rounded);
    if (t->data == nullptr) throw std::runtime_error("aligned_alloc failed");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

const DLDevice kCPU{kDLCPU, 0};

ffi::Tensor EmptyCPU(const std::vector<int64_t>& shape, DLDataType dtype) {
  return ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                  dtype, kCPU);
}

size_t ItemSize(DLDataType dt) { return (static_cast<size_t>(dt.bits) * dt.lanes + 7) / 8; }

std::string DTypeStr(DLDataType dt) { return std::string(ffi::DLDataTypeToString(dt)); }

std::string ShapeStr(ffi::ShapeView s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------- .npy
// Minimal reader: v1/v2/v3, little-endian or '|' byte order, fortran_order False.
DLDataType NpyDescrToDType(const std::string& descr) {
  if (descr.size() < 3) throw std::runtime_error("bad npy descr " + descr);
  char order = descr[0], kind = descr[1];
  if (order == '>') throw std::runtime_error("big-endian .npy not supported");
  int bytes = std::stoi(descr.substr(2));
  DLDataType dt;
  dt.lanes = 1;
  dt.bits = static_cast<uint8_t>(bytes * 8);
  switch (kind) {
    case 'f': dt.code = kDLFloat; break;
    case 'i': dt.code = kDLInt; break;
    case 'u': dt.code = kDLUInt; break;
    case 'b': dt.code = kDLBool; dt.bits = 8; break;  // numpy bool -> TVM "bool" (8-bit storage)
    default: throw std::runtime_error("unsupported npy dtype " + descr);
  }
  return dt;
}

std::string HeaderField(const std::string& header, const std::string& key) {
  size_t p = header.find("'" + key + "'");
  if (p == std::string::npos) throw std::runtime_error("npy header lacks " + key);
  p = header.find(':', p);
  if (p == std::string::npos) throw std::runtime_error("bad npy header");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  return header.substr(p);
}

ffi::Tensor LoadNpy(const std::string& path) {
  std::vector<char> buf = ReadFile(path);
  if (buf.size() < 10 || std::memcmp(buf.data(), "\x93NUMPY", 6) != 0)
    throw std::runtime_error(path + ": not a .npy file");
  int major = static_cast<unsigned char>(buf[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<unsigned char>(buf[8]) | (static_cast<unsigned char>(buf[9]) << 8);
    hstart = 10;
  } else {
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<unsigned char>(buf[8 + i])) << (8 * i);
    hstart = 12;
  }
  std::string header(buf.data() + hstart, hlen);
  std::string descr = HeaderField(header, "descr");
  descr = descr.substr(1, descr.find('\'', 1) - 1);
  if (HeaderField(header, "fortran_order").rfind("False", 0) != 0)
    throw std::runtime_error(path + ": fortran_order arrays not supported");
  std::string sh = HeaderField(header, "shape");
  sh = sh.substr(1, sh.find(')') - 1);
  std::vector<int64_t> shape;
  std::stringstream ss(sh);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok.find_first_not_of(' ') == std::string::npos) continue;
    shape.push_back(std::stoll(tok));
  }
  DLDataType dt = NpyDescrToDType(descr);
  ffi::Tensor t = EmptyCPU(shape, dt);
  size_t nbytes = ffi::GetDataSize(*t.GetDLTensorPtr());
  size_t off = hstart + hlen;
  if (buf.size() - off != nbytes)
    throw std::runtime_error(path + ": payload " + std::to_string(buf.size() - off) +
                             " bytes, expected " + std::to_string(nbytes));
  std::memcpy(t.data_ptr(), buf.data() + off, nbytes);
  return t;
}

// ---------------------------------------------------------------- raw file + spec
// FILE:DTYPE:D0xD1x...   (split from the right so that FILE may contain ':')
ffi::Tensor LoadRaw(const std::string& spec) {
  size_t p2 = spec.rfind(':');
  size_t p1 = p2 == std::string::npos ? std::string::npos : spec.rfind(':', p2 - 1);
  if (p1 == std::string::npos) throw std::runtime_error("bad input spec: " + spec);
  std::string path = spec.substr(0, p1);
  std::string dtype_s = spec.substr(p1 + 1, p2 - p1 - 1);
  std::string shape_s = spec.substr(p2 + 1);
  std::vector<int64_t> shape;
  std::stringstream ss(shape_s);
  std::string tok;
  while (std::getline(ss, tok, 'x')) {
    if (!tok.empty()) shape.push_back(std::stoll(tok));
  }
  DLDataType dt = ffi::StringToDLDataType(ffi::String(dtype_s));
  ffi::Tensor t = EmptyCPU(shape, dt);
  std::vector<char> buf = ReadFile(path);
  size_t nbytes = ffi::GetDataSize(*t.GetDLTensorPtr());
  if (buf.size() != nbytes)
    throw std::runtime_error(path + ": " + std::to_string(buf.size()) + " bytes, expected " +
                             std::to_string(nbytes) + " for " + dtype_s + " " + shape_s);
  std::memcpy(t.data_ptr(), buf.data(), nbytes);
  return t;
}

ffi::Tensor LoadInput(const std::string& arg) {
  if (arg.size() > 4 && arg.compare(arg.size() - 4, 4, ".npy") == 0) return LoadNpy(arg);
  return LoadRaw(arg);
}

// ---------------------------------------------------------------- outputs
float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> ToFloat32(const ffi::Tensor& t) {
  const DLTensor* dl = t.GetDLTensorPtr();
  if (dl->device.device_type != kDLCPU) throw std::runtime_error("output not on CPU");
  if (!t.IsContiguous()) throw std::runtime_error("non-contiguous output not supported");
  DLDataType dt = dl->dtype;
  if (dt.lanes != 1) throw std::runtime_error("vector dtype output not supported");
  int64_t n = t.numel();
  const char* base = static_cast<const char*>(dl->data) + dl->byte_offset;
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const char* p = base + i * ItemSize(dt);
    float v;
    if (dt.code == kDLFloat && dt.bits == 32) { std::memcpy(&v, p, 4); }
    else if (dt.code == kDLFloat && dt.bits == 64) { double d; std::memcpy(&d, p, 8); v = static_cast<float>(d); }
    else if (dt.code == kDLFloat && dt.bits == 16) { uint16_t h; std::memcpy(&h, p, 2); v = HalfToFloat(h); }
    else if (dt.code == kDLBfloat && dt.bits == 16) { uint16_t h; std::memcpy(&h, p, 2); uint32_t b = uint32_t(h) << 16; std::memcpy(&v, &b, 4); }
    else if (dt.code == kDLInt && dt.bits == 64) { int64_t x; std::memcpy(&x, p, 8); v = static_cast<float>(x); }
    else if (dt.code == kDLInt && dt.bits == 32) { int32_t x; std::memcpy(&x, p, 4); v = static_cast<float>(x); }
    else if (dt.code == kDLInt && dt.bits == 16) { int16_t x; std::memcpy(&x, p, 2); v = static_cast<float>(x); }
    else if (dt.code == kDLInt && dt.bits == 8) { v = static_cast<float>(*reinterpret_cast<const int8_t*>(p)); }
    else if ((dt.code == kDLUInt || dt.code == kDLBool) && dt.bits == 8) { v = static_cast<float>(*reinterpret_cast<const uint8_t*>(p)); }
    else throw std::runtime_error("unsupported output dtype " + DTypeStr(dt));
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

void WriteNpyF32(const std::string& path, ffi::ShapeView shape, const std::vector<float>& data) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + ShapeStr(shape) + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t hl = static_cast<uint16_t>(header.size());
  char hb[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
  f.write(hb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * 4));
  if (!f) throw std::runtime_error("write failed: " + path);
}

// Flatten the VM return value (Tensor, or nested ffi::Array for Relax tuples) into tensors.
void Flatten(const ffi::Any& v, std::vector<ffi::Tensor>* out) {
  if (auto t = v.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = v.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& e : *arr) Flatten(e, out);
  } else {
    throw std::runtime_error("unsupported output type: " + v.GetTypeKey());
  }
}

void Usage() {
  std::cerr << "usage: loader MODEL.so [--func main] [--out DIR] [--alloc naive|pooled] "
               "[--repeat N] [--threads N] INPUT...\n"
               "  INPUT = FILE.npy | FILE:DTYPE:D0xD1x...\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) { Usage(); return 2; }
  std::string model_path = argv[1], func_name = "main", out_dir = ".";
  int alloc_type = 2;  // tvm::runtime::memory::AllocatorType: kNaive = 1, kPooled = 2
  int repeat = 0;
  int threads = 0;
  std::vector<std::string> inputs;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { Usage(); std::exit(2); }
      return argv[++i];
    };
    if (a == "--func") func_name = next();
    else if (a == "--out") out_dir = next();
    else if (a == "--alloc") { std::string s = next(); alloc_type = (s == "naive") ? 1 : 2; }
    else if (a == "--repeat") repeat = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "-h" || a == "--help") { Usage(); return 0; }
    else inputs.push_back(a);
  }

  try {
    // 1. Load the exported library. For a Relax executable the root module returned here is the
    //    "relax.VMExecutable" (deserialized from the __tvm_ffi__library_bin blob by the loader
    //    "ffi.Module.load_from_bytes.relax.VMExecutable", registered by libtvm_runtime.so); the
    //    compiled kernels (the DSO library module) are attached as its import.
    //    NOTE: dlopen() treats a name without '/' as a library-path search -> pass an absolute path
    //    (Python's tvm.runtime.load_module does os.path.realpath too).
    char resolved[PATH_MAX];
    if (realpath(model_path.c_str(), resolved) == nullptr)
      throw std::runtime_error("cannot find model file " + model_path);
    model_path = resolved;
    ffi::Module exec_mod = ffi::Module::LoadFromFile(model_path);
    std::cerr << "[loader] loaded " << model_path << " kind=" << exec_mod->kind() << "\n";

    // 2. Create a VM instance: executable["vm_load_executable"]() -> Module (relax.VirtualMachine)
    ffi::Optional<ffi::Function> f_load = exec_mod->GetFunction("vm_load_executable");
    if (!f_load.has_value()) throw std::runtime_error("model has no vm_load_executable (not a Relax VM executable?)");
    ffi::Module vm = (*f_load)().cast<ffi::Module>();

    // 3. vm["vm_initialization"](device_type, device_id, alloc_type, ...) -- triples per device.
    //    CPU-only: (kDLCPU=1, 0, pooled=2). Python appends a CPU triple if the last device isn't CPU.
    ffi::Function f_init = vm->GetFunction("vm_initialization").value();
    f_init(static_cast<int>(kDLCPU), 0, alloc_type);

    // 4. Look up the Relax function (VM falls back to _LookupFunction for non-builtin names).
    ffi::Optional<ffi::Function> f_main_opt = vm->GetFunction(func_name);
    if (!f_main_opt.has_value()) throw std::runtime_error("function not found: " + func_name);
    ffi::Function f_main = *f_main_opt;

    //    Introspection (same packed functions Python's VirtualMachine uses for kwargs):
    //    get_function_arity(name) -> int, get_function_param_name(name, i) -> str.
    int arity = vm->GetFunction("get_function_arity").value()(func_name).cast<int>();
    ffi::Function f_pname = vm->GetFunction("get_function_param_name").value();
    std::cerr << "[loader] " << func_name << "(";
    for (int i = 0; i < arity; ++i)
      std::cerr << (i ? ", " : "") << f_pname(func_name, i).cast<ffi::String>().c_str();
    std::cerr << ")\n";
    if (static_cast<size_t>(arity) != inputs.size())
      throw std::runtime_error(func_name + " takes " + std::to_string(arity) + " inputs, " +
                               std::to_string(inputs.size()) + " given");

    // Optional: thread pool size. runtime.config_threadpool(mode, nthreads, Array<String> cpus);
    // mode -3 = ThreadGroup::kSpecifyThreadShareAllCore. runtime.NumThreads() -> int.
    if (threads > 0) {
      cpu_set_t set;
      ffi::Array<ffi::String> cpus;
      if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE; ++c)
          if (CPU_ISSET(c, &set)) cpus.push_back(ffi::String(std::to_string(c)));
      }
      ffi::Function::GetGlobalRequired("runtime.config_threadpool")(-3, threads, cpus);
    }
    std::cerr << "[loader] TVM threads: "
              << ffi::Function::GetGlobalRequired("runtime.NumThreads")().cast<int>() << "\n";

    // 5. Inputs.
    std::vector<ffi::Tensor> in_tensors;
    for (const std::string& s : inputs) {
      in_tensors.push_back(LoadInput(s));
      const ffi::Tensor& t = in_tensors.back();
      std::cerr << "[loader] input " << in_tensors.size() - 1 << ": " << DTypeStr(t.dtype()) << " "
                << ShapeStr(t.shape()) << "\n";
    }
    std::vector<ffi::AnyView> args(in_tensors.begin(), in_tensors.end());

    // 6. Run.
    ffi::Any ret;
    auto t0 = std::chrono::steady_clock::now();
    f_main.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ret);
    auto t1 = std::chrono::steady_clock::now();
    std::cerr << "[loader] first run " << std::chrono::duration<double, std::milli>(t1 - t0).count()
              << " ms\n";
    if (repeat > 0) {
      auto r0 = std::chrono::steady_clock::now();
      for (int r = 0; r < repeat; ++r) {
        ffi::Any tmp;
        f_main.CallPacked(args.data(), static_cast<int32_t>(args.size()), &tmp);
      }
      auto r1 = std::chrono::steady_clock::now();
      std::cout << "mean_ms " << std::chrono::duration<double, std::milli>(r1 - r0).count() / repeat
                << " over " << repeat << " runs\n";
    }

    // 7. Outputs -> raw float32 + .npy + manifest.
    std::vector<ffi::Tensor> outs;
    Flatten(ret, &outs);
    std::ofstream manifest(out_dir + "/outputs.txt");
    for (size_t i = 0; i < outs.size(); ++i) {
      const ffi::Tensor& t = outs[i];
      std::vector<float> data = ToFloat32(t);
      std::string stem = out_dir + "/output_" + std::to_string(i);
      std::ofstream f(stem + ".bin", std::ios::binary);
      f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * 4));
      if (!f) throw std::runtime_error("write failed: " + stem + ".bin");
      WriteNpyF32(stem + ".npy", t.shape(), data);
      manifest << i << " " << DTypeStr(t.dtype()) << " " << ShapeStr(t.shape()) << "\n";
      std::cout << "output " << i << ": " << DTypeStr(t.dtype()) << " " << ShapeStr(t.shape())
                << " -> " << stem << ".bin (float32)\n";
    }
    // Release results (allocated by the VM's allocator) before the VM and the module go away.
    outs.clear();
    ret = ffi::Any();
  } catch (const ffi::Error& e) {
    std::cerr << "[loader] TVM error:\n" << e.FullMessage() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "[loader] error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
