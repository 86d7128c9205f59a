# Warning set from STYLE B3. Every -Wno- carries its reason.
set(IMGD_C_WARNINGS
  -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wmissing-declarations -Wold-style-definition -Wpointer-arith -Wcast-qual -Wcast-align
  -Wwrite-strings -Wundef -Wvla -Wformat=2 -Wformat-security -Wnull-dereference
  -Wdouble-promotion -Wimplicit-fallthrough -Wredundant-decls -Wconversion
  # Sign conversions between size_t and int are pervasive and checked by explicit range
  # checks where the value comes from input.
  -Wno-sign-conversion
  -Werror=implicit-function-declaration -Werror=implicit-int
  -Werror=incompatible-pointer-types -Werror=return-type)
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  list(APPEND IMGD_C_WARNINGS -Wmissing-variable-declarations -Wcomma)
endif()
if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
  # gcc 12's -Wmaybe-uninitialized depends on inlining at -O2 and reports out-parameters
  # that are set on every IMGD_OK path (it cannot see that imgd_fail() never returns
  # IMGD_OK), so a Debug build passes and the RelWithDebInfo test build fails. It stays a
  # visible warning; clang's flow-based -Wsometimes-uninitialized (an error in the fuzz
  # build) still catches the real cases.
  list(APPEND IMGD_C_WARNINGS -Wno-error=maybe-uninitialized)
endif()

# C flags apply to C sources only: a target may also hold CUDA sources (src/tensor/cuda),
# which get the STYLE B3 CUDA set instead (cmake/cuda.cmake).
function(imgd_warnings target)
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:C>:${IMGD_C_WARNINGS}>")
  if(IMGD_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:C>:-Werror>)
  endif()
endfunction()
