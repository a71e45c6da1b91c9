# dptrainDependencies.cmake: finds parallel HDF5 (C), OpenBLAS and jansson, the dependencies
# of libdptrain without a standard CMake imported target, and wraps each in an imported target
# that libdptrain's usage requirements name: dptrain_deps::hdf5, dptrain_deps::openblas and
# dptrain_deps::jansson.
# Included by the build (CMakeLists.txt) and by the installed dptrainConfig.cmake, so that a
# project using find_package(dptrain) finds the same libraries the same way.
# Expects find_package(MPI COMPONENTS C) and find_package(PkgConfig) to have run.
#
# Parallel HDF5: CMake's FindHDF5 first (h5pcc compiler wrapper, HDF5_ROOT, HDF5_DIR, module
# systems, Spack), which must report HDF5_IS_PARALLEL; Debian's pkg-config module
# hdf5-openmpi (hdf5-mpich under MPICH) only as a fallback. On Debian the h5pcc command is an
# alternative that points at the Open MPI or the MPICH build, whichever has the higher
# priority: when h5pcc.openmpi (h5pcc.mpich under MPICH) exists and the user chose nothing
# (HDF5_C_COMPILER_EXECUTABLE, HDF5_ROOT, HDF5_DIR), that wrapper is used.
#
# Sets DPTRAIN_HDF5_FOUND, DPTRAIN_HDF5_VIA ("FindHDF5" or "pkg-config"), DPTRAIN_HDF5_VERSION
# and, for dptrain.pc, DPTRAIN_HDF5_PC_REQUIRES (a pkg-config module) or
# DPTRAIN_HDF5_LIBRARIES (libraries to write as Libs.private); DPTRAIN_OPENBLAS_FOUND.

set(DPTRAIN_HDF5_FOUND FALSE)
if(NOT TARGET dptrain_deps::hdf5)
  # Which MPI: Debian names its parallel HDF5 builds after it (h5pcc.openmpi, hdf5-openmpi).
  set(_dptrain_mpi openmpi)
  if(EXISTS "${MPI_C_HEADER_DIR}/mpi.h")
    file(STRINGS "${MPI_C_HEADER_DIR}/mpi.h" _dptrain_mpi_h REGEX "^#define MPICH_VERSION ")
    if(_dptrain_mpi_h)
      set(_dptrain_mpi mpich)
    endif()
  endif()
  if(NOT HDF5_C_COMPILER_EXECUTABLE AND NOT HDF5_ROOT AND NOT DEFINED ENV{HDF5_ROOT}
     AND NOT HDF5_DIR)
    find_program(DPTRAIN_H5PCC NAMES h5pcc.${_dptrain_mpi}
                 DOC "Debian's parallel HDF5 compiler wrapper for this MPI")
    mark_as_advanced(DPTRAIN_H5PCC)
    if(DPTRAIN_H5PCC)
      set(HDF5_C_COMPILER_EXECUTABLE "${DPTRAIN_H5PCC}" CACHE FILEPATH
          "HDF5 C compiler wrapper")
    endif()
  endif()
  set(HDF5_PREFER_PARALLEL TRUE)
  find_package(HDF5 QUIET COMPONENTS C)
  if(HDF5_FOUND AND HDF5_IS_PARALLEL)
    add_library(dptrain_deps::hdf5 INTERFACE IMPORTED)
    # Parallel hdf5.h includes mpi.h.
    set_target_properties(dptrain_deps::hdf5 PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${HDF5_C_INCLUDE_DIRS}"
      INTERFACE_COMPILE_OPTIONS "${HDF5_C_DEFINITIONS}"
      INTERFACE_LINK_LIBRARIES "${HDF5_C_LIBRARIES};MPI::MPI_C")
    set(DPTRAIN_HDF5_VIA "FindHDF5")
    set(DPTRAIN_HDF5_VERSION "${HDF5_VERSION}")
    set(DPTRAIN_HDF5_LIBRARIES "${HDF5_C_LIBRARIES}")
    set(DPTRAIN_HDF5_PC_REQUIRES "")
  else()
    pkg_check_modules(DPTRAIN_PC_HDF5 QUIET IMPORTED_TARGET hdf5-${_dptrain_mpi})
    if(DPTRAIN_PC_HDF5_FOUND)
      add_library(dptrain_deps::hdf5 INTERFACE IMPORTED)
      set_target_properties(dptrain_deps::hdf5 PROPERTIES
        INTERFACE_LINK_LIBRARIES "PkgConfig::DPTRAIN_PC_HDF5;MPI::MPI_C")
      set(DPTRAIN_HDF5_VIA "pkg-config")
      set(DPTRAIN_HDF5_VERSION "${DPTRAIN_PC_HDF5_VERSION}")
      set(DPTRAIN_HDF5_LIBRARIES "")
      set(DPTRAIN_HDF5_PC_REQUIRES "hdf5-${_dptrain_mpi}")
    endif()
  endif()
endif()
if(TARGET dptrain_deps::hdf5)
  set(DPTRAIN_HDF5_FOUND TRUE)
endif()

set(DPTRAIN_OPENBLAS_FOUND FALSE)
if(NOT TARGET dptrain_deps::openblas)
  pkg_check_modules(DPTRAIN_PC_OPENBLAS QUIET IMPORTED_TARGET openblas)
  if(DPTRAIN_PC_OPENBLAS_FOUND)
    add_library(dptrain_deps::openblas INTERFACE IMPORTED)
    set_target_properties(dptrain_deps::openblas PROPERTIES
      INTERFACE_LINK_LIBRARIES "PkgConfig::DPTRAIN_PC_OPENBLAS")
  endif()
endif()
if(TARGET dptrain_deps::openblas)
  set(DPTRAIN_OPENBLAS_FOUND TRUE)
endif()

# jansson: the run configuration's JSON (src/train/run_cfg.c).
set(DPTRAIN_JANSSON_FOUND FALSE)
if(NOT TARGET dptrain_deps::jansson)
  pkg_check_modules(DPTRAIN_PC_JANSSON QUIET IMPORTED_TARGET jansson)
  if(DPTRAIN_PC_JANSSON_FOUND)
    add_library(dptrain_deps::jansson INTERFACE IMPORTED)
    set_target_properties(dptrain_deps::jansson PROPERTIES
      INTERFACE_LINK_LIBRARIES "PkgConfig::DPTRAIN_PC_JANSSON")
  endif()
endif()
if(TARGET dptrain_deps::jansson)
  set(DPTRAIN_JANSSON_FOUND TRUE)
endif()

# oneDNN (optional): the convolutions in its blocked layouts (src/core/conv_dnnl.c); without
# it they run as im2col + OpenBLAS. Debian's libdnnl runs its threads on OpenMP (libgomp):
# dptrain sets that runtime's thread count (omp_set_num_threads) with OpenBLAS's.
# DPTRAIN_WITH_DNNL=OFF builds without it even when it is installed.
set(DPTRAIN_DNNL_FOUND FALSE)
if(NOT DEFINED DPTRAIN_WITH_DNNL OR DPTRAIN_WITH_DNNL)
  if(NOT TARGET dptrain_deps::dnnl)
    find_path(DPTRAIN_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
    find_library(DPTRAIN_DNNL_LIBRARY NAMES dnnl)
    mark_as_advanced(DPTRAIN_DNNL_INCLUDE_DIR DPTRAIN_DNNL_LIBRARY)
    find_package(OpenMP QUIET COMPONENTS C)
    if(DPTRAIN_DNNL_INCLUDE_DIR AND DPTRAIN_DNNL_LIBRARY AND OpenMP_C_FOUND)
      add_library(dptrain_deps::dnnl INTERFACE IMPORTED)
      set_target_properties(dptrain_deps::dnnl PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${DPTRAIN_DNNL_INCLUDE_DIR}"
        INTERFACE_LINK_LIBRARIES "${DPTRAIN_DNNL_LIBRARY};OpenMP::OpenMP_C")
    endif()
  endif()
  if(TARGET dptrain_deps::dnnl)
    set(DPTRAIN_DNNL_FOUND TRUE)
  endif()
endif()
