# The CUDA backend (src/tensor/cuda), built when IMGD_CUDA is ON, or AUTO and the toolkit is
# found. Sets IMGD_HAVE_CUDA, IMGD_CUDA_LIBS and imgd_cuda_sources(target).
#
# Host code (vtable, memory, cuBLAS calls) is C in src/tensor/cuda/*.c and gets the normal C
# warnings; only the kernels are CUDA C++ (*.cu), compiled by nvcc with -Xcompiler -Wall,-Wextra
# (STYLE B3). CMAKE_CUDA_ARCHITECTURES defaults to 90 (H100, the lent GPU machine); set it
# for other cards (e.g. -DCMAKE_CUDA_ARCHITECTURES=89 or "native" where a GPU is visible);
# compute capability 8.0 or later (bf16 tensor-core kernels).
set(IMGD_HAVE_CUDA OFF)
set(IMGD_HAVE_CUDNN OFF)
set(IMGD_CUDA_LIBS "")
set(IMGD_CUDNN AUTO CACHE STRING "cuDNN for conv2d in the CUDA backend: AUTO (when found) or OFF")

string(TOUPPER "${IMGD_CUDA}" _imgd_cuda_mode)
if(_imgd_cuda_mode STREQUAL "AUTO" AND IMGD_FUZZ)
  # libFuzzer builds instrument the parsers; CUDA executables are linked by the host C++
  # compiler, which does not know -fsanitize=fuzzer-no-link.
  message(STATUS "IMGD_CUDA=AUTO: no CUDA backend in a libFuzzer build (IMGD_FUZZ=ON)")
  set(_imgd_cuda_mode OFF)
elseif(_imgd_cuda_mode STREQUAL "AUTO")
  set(_imgd_cuda_required OFF)
elseif(IMGD_CUDA)
  set(_imgd_cuda_required ON)
else()
  set(_imgd_cuda_mode OFF)
endif()

if(NOT _imgd_cuda_mode STREQUAL "OFF")
  # nvcc is often not on PATH; the toolkit's standard location is.
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(CUDAToolkit_FOUND AND TARGET CUDA::cublas)
      set(IMGD_HAVE_CUDA ON)
      set(IMGD_CUDA_LIBS CUDA::cudart CUDA::cublas CUDA::cublasLt)
      # cuDNN (conv2d through cudnnConvolutionForward): optional, next to the toolkit or in
      # the system paths. Without it conv2d stays im2col + cuBLAS.
      if(NOT IMGD_CUDNN STREQUAL "OFF")
        find_path(IMGD_CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
        find_library(IMGD_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
        if(IMGD_CUDNN_INCLUDE_DIR AND IMGD_CUDNN_LIBRARY)
          set(IMGD_HAVE_CUDNN ON)
          list(APPEND IMGD_CUDA_LIBS ${IMGD_CUDNN_LIBRARY})
        endif()
      endif()
    endif()
  endif()
  if(_imgd_cuda_required AND NOT IMGD_HAVE_CUDA)
    message(FATAL_ERROR "IMGD_CUDA=ON but no CUDA compiler/toolkit was found "
                        "(set CUDACXX or CMAKE_CUDA_COMPILER, or use -DIMGD_CUDA=AUTO/OFF)")
  endif()
endif()

if(IMGD_HAVE_CUDA)
  message(STATUS "imgd: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                 "architectures ${CMAKE_CUDA_ARCHITECTURES}, cuDNN ${IMGD_HAVE_CUDNN})")
else()
  message(STATUS "imgd: CUDA backend OFF (IMGD_CUDA=${IMGD_CUDA}); backends: cpu, ref")
endif()

# Adds the CUDA backend's sources, flags and libraries to target (the library objects).
function(imgd_cuda_sources target)
  file(GLOB _c_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/tensor/cuda/*.c)
  file(GLOB _cu_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/tensor/cuda/*.cu)
  target_sources(${target} PRIVATE ${_c_srcs} ${_cu_srcs})
  target_compile_definitions(${target} PUBLIC IMGD_HAVE_CUDA=1)
  if(IMGD_HAVE_CUDNN)
    target_compile_definitions(${target} PUBLIC IMGD_HAVE_CUDNN=1)
    target_include_directories(${target} SYSTEM PRIVATE ${IMGD_CUDNN_INCLUDE_DIR})
  endif()
  target_link_libraries(${target} PUBLIC ${IMGD_CUDA_LIBS})
  # No fast math: the kernels are checked against the reference at f32 tolerances.
  target_compile_options(${target} PRIVATE
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra;-lineinfo>")
  if(IMGD_WERROR)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>")
  endif()
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
endfunction()
