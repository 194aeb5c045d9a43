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
  mobileNetV3Arch, efficientNetArch, ghostNetArch, edgeNeXtArch, vitArch, deitArch, insightfaceVitArch, zooBackboneArch, ZOO_BACKBONE_NAMES,
  makeDivisible, tfSamePadding, ZooBackboneName, ZooArchOptions, CnnPresetOptions, EdgeNeXtArchOptions, VitArchOptions, DeitArchOptions,
  InsightfaceVitArchOptions, GhostNetVariant, AnyArchNode, ZooArchNode,
} from './backbones/arch';
export { readOnnx, parseOnnx, recognizeOnnx, OnnxModel, RecognizedOnnx, ImportedTensor, FoldedPair } from './onnx/import';
export { translateOnnx, TranslatedOnnx } from './onnx/translate';
export { Backbone, IResNet, loadOnnx, MobileFaceNet, BackboneOptions, BackboneRuntimeOptions, BackboneParameter, SaveOptions, StateDictValue, LoadStateDictResult } from './backbones/model';
export { Optimizer, SGD, AdamW, paramGroups, headParams, sampledRows, clipGradNorm, scaleGradients, OptimParam, ParamGroup, ParamGroupsOptions, OptimStepResult, OptimStepOptions, ParamState, OptimizerState, SGDOptions, AdamWOptions } from './optim';
export { MultiStepLR, CosineLR, PolyWarmupLR, fromEpochs, SEED_MILESTONE_EPOCHS, ARCFACE_TORCH_V1_MILESTONES, LrSchedule, EpochSchedules } from './schedule';
export { RawImage, Sample, SampleSource, SourceDescriptor, Batch } from './data/types';
export { RecordIO, RecordIOWriter, packImages } from './data/recordio';
export { readBinPack, parseBinPack, writeBinPack, encodeBinPack, BinPack } from './data/binpack';
export { ImageFolder, ImageList } from './data/folder';
export { decodeImage } from './data/image';
export { AugmentOptions } from './data/augment';
export { DataLoader, DataLoaderOptions, measureLoader } from './data/loader';
export { SyntheticFaces, SyntheticFacesOptions } from './data/synthetic';
export { verificationAccuracy, tarAtFar, linearPixelBaseline } from './data/baseline';
export { Trainer, TrainerOptions, StepResult, FitResult, VerificationSet, VerificationResult } from './train/trainer';
export { GradScaler, GradScalerOptions, GradScalerState, ScaleUpdate } from './train/scaler';
export { embedImages, EmbedOptions } from './train/embed';
export { resolveConfig, TrainConfig } from './train/config';
export { runTraining } from './train/run';
export { runDemo, DemoOptions, DemoResult } from './demo';
export { writeSyntheticRecordIO, writeSyntheticBinPack, encodeJpeg } from './data/synthetic-packs';

// Inference, verification and evaluation (issue 6)
export * from './embed';
export * from './eval';
export { FaceIndex, mergeTopK, MAX_K, Aggregate, IndexStorage, FaceIndexOptions, SearchOptions, SearchResult, RangeSearchResult } from './search';
