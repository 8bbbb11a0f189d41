/* The nine C entry points the TensorRT 11.4 Python bindings (tensorrt-cu13-bindings) import from libnvinfer,
 * libnvinfer_plugin and libnvonnxparser, each returning "nothing". With this stub in place of the real libraries
 * (not installable here) the real bindings import, so their attribute names and the pure-Python tensorrt.plugin
 * validators can be checked; nothing can be built or run through them. */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *namespace_) { return 0; }
