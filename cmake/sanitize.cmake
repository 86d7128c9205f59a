if(IMGD_SANITIZE)
  string(REPLACE ";" "," _san "${IMGD_SANITIZE}")
  # C only: nvcc (CUDA sources) does not take sanitizer flags.
  add_compile_options("$<$<COMPILE_LANGUAGE:C>:-fsanitize=${_san};-fno-sanitize-recover=all;-fno-omit-frame-pointer>")
  add_link_options(-fsanitize=${_san})
endif()
