// TensorRT plugin glue (IPluginV3) of the fused pixel stage: dmfnet::DmfnetPixelAttentionFuse, version 1, the node
// `dmfnet-export onnx --trt-plugins` writes, for builds without Python (trtexec --staticPlugins, a C++ builder) and
// for `dmfnet-export build --plugin-lib`. Built as libdmfnet_trt_plugins.so by the root CMakeLists.txt where
// TensorRT's headers and libnvinfer are found; the kernel itself is cma_kernels.cu's pixel_attention_fuse.
//
// Loading the library registers the creator with TensorRT's plugin registry (as REGISTER_TENSORRT_PLUGIN does).
// The Python build path uses the AOT quickly deployable plugin instead (dmfnet_edge/build/qdp_plugin.py), which
// embeds its PTX in the engine; an engine built with this library needs the library again where it runs.
//
// I/O: x, y (N, C, H, W), A_s (N, 1, H, W), A_c (N, C, 1, 1), pixel weight (C, 2, 3, 3), pixel bias (C) -> out
// (N, C, H, W); FP32, linear. No attributes: the node carries only the ONNX parser's plugin_namespace and
// plugin_version, and any other field is refused (a graph this plugin does not know).
#include <NvInferRuntime.h>

#include <cstring>
#include <new>

#include "cma_kernels.h"

namespace dmfnet {
namespace {

using namespace nvinfer1;

constexpr char const* kName = "DmfnetPixelAttentionFuse";
constexpr char const* kVersion = "1";
constexpr char const* kNamespace = "dmfnet";
constexpr int32_t kInputs = 6;

class PixelAttentionFusePlugin final : public IPluginV3,
                                       public IPluginV3OneCore,
                                       public IPluginV3OneBuild,
                                       public IPluginV3OneRuntime {
 public:
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }

  IPluginV3* clone() noexcept override { return new (std::nothrow) PixelAttentionFusePlugin(*this); }

  AsciiChar const* getPluginName() const noexcept override { return kName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

  int32_t getNbOutputs() const noexcept override { return 1; }

  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override {
    if (nbOutputs != 1 || nbInputs != kInputs) return -1;
    outputTypes[0] = DataType::kFLOAT;
    return 0;
  }

  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                          IExprBuilder& exprBuilder) noexcept override {
    if (nbInputs != kInputs || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
    outputs[0] = inputs[0];  // out has x's shape
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override {
    if (nbInputs != kInputs || nbOutputs != 1 || pos < 0 || pos > kInputs) return false;
    return inOut[pos].desc.type == DataType::kFLOAT && inOut[pos].desc.format == TensorFormat::kLINEAR;
  }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override {
    return nbInputs == kInputs && nbOutputs == 1 ? 0 : -1;
  }

  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override {
    if (nbInputs != kInputs || nbOutputs != 1) return -1;
    Dims const& x = in[0].dims;
    const bool maps = x.nbDims == 4 && in[2].dims.d[0] == x.d[0] && in[3].dims.d[1] == x.d[1];
    return maps ? 0 : -1;
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
    Dims const& d = inputDesc[0].dims;
    auto in = [inputs](int i) { return static_cast<float const*>(inputs[i]); };
    const cudaError_t err = pixel_attention_fuse(in(0), in(1), in(2), in(3), in(4), in(5),
                                                 static_cast<float*>(outputs[0]), static_cast<int>(d.d[0]),
                                                 static_cast<int>(d.d[1]), static_cast<int>(d.d[2]),
                                                 static_cast<int>(d.d[3]), stream);
    return err == cudaSuccess ? 0 : -1;
  }

  IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override { return clone(); }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &fields_; }

 private:
  PluginFieldCollection fields_{0, nullptr};  // nothing to serialise: the op has no attributes
};

class PixelAttentionFuseCreator final : public IPluginCreatorV3One {
 public:
  IPluginV3* createPlugin(AsciiChar const* name, PluginFieldCollection const* fc,
                          TensorRTPhase phase) noexcept override {
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
      const char* field = fc->fields[i].name;
      if (std::strcmp(field, "plugin_namespace") != 0 && std::strcmp(field, "plugin_version") != 0) return nullptr;
    }
    return new (std::nothrow) PixelAttentionFusePlugin();
  }

  PluginFieldCollection const* getFieldNames() noexcept override { return &fields_; }
  AsciiChar const* getPluginName() const noexcept override { return kName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

 private:
  PluginFieldCollection fields_{0, nullptr};
};

// Registered when the library is loaded (dlopen, ctypes.CDLL, trtexec --staticPlugins).
struct Registration {
  Registration() { getPluginRegistry()->registerCreator(creator, kNamespace); }
  PixelAttentionFuseCreator creator;
};
Registration registration;

}  // namespace
}  // namespace dmfnet
