/**
 * facecuda: face recognition for Node.js with a native C++/CUDA core.
 *
 * @example
 * import { Tensor, gemm, system } from 'facecuda';
 * const a = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
 * const c = await gemm(a, a);
 * console.log(await c.toArray(), (await system.info()).cuda.reason);
 */
export { FacecudaError, FacecudaTypeError, FacecudaRangeError, ErrorCode } from './errors';
export { Tensor, TensorData, TensorOptions, DType, DTYPES, MAX_RANK, toBfloat16, toFloat16 } from './tensor';
export { resolveDevice, cudaAvailable, cudaStatus, autoDeviceReason, DeviceSpec, DeviceName } from './device';
export { gemm, GemmOptions, Precision } from './ops';
export {
  MarginHead, SoftmaxHead, NormFaceHead, SphereFaceHead, CosFaceHead, ArcFaceHead, CombinedMarginHead, AdaFaceHead, ElasticFaceHead,
  CenterLoss, combineShardStats, HeadOptions, NormalizedHeadOptions, HeadPrecision, HeadForwardResult, BackwardOptions, HeadGradients,
  HeadParameters, HeadState, AdaFaceState, SphereFaceState, SphereFaceLambda, ShardStats, CombinedShardStats, CenterLossOptions,
} from './heads';
import * as system from './system';
export { system };
export { version } from './system';
export { readSafetensors, readSafetensorsHeader, parseSafetensors, writeSafetensors, SAFETENSORS_DTYPES, MAX_HEADER_LENGTH, SafetensorsDType, SafetensorsArray, SafetensorsTensorInfo, SafetensorsHeader, SafetensorsEntry, ParsedSafetensors, RawTensor, ReadSafetensorsOptions, ReadSafetensorsResult } from './safetensors';
export {
  iresnetArch, foldBatchNorms, mobileFaceNetArch, mobileFaceNetLargeArch, backboneArch, inferShapes, parameterCount, trainableParameterCount, macs,
  stateDictTensors, arcfacePreprocessing, alignmentTemplate, ARCFACE_TEMPLATE_112, BACKBONE_NAMES, BackboneArch, ArchNode, TensorSpec,
  Preprocessing, AlignmentTemplate, IResNetDepth,
} from './backbones/arch';
export { readOnnx, parseOnnx, recognizeOnnx, OnnxModel, RecognizedOnnx, ImportedTensor, FoldedPair } from './onnx/import';
export { Backbone, IResNet, loadOnnx, MobileFaceNet, BackboneOptions, BackboneRuntimeOptions, BackboneParameter, SaveOptions, StateDictValue, LoadStateDictResult } from './backbones/model';
